package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

// backup saves a running server's data file as a backup: the copy the
// server streams, followed by its manifest. bolt.SaveBackup checks the file
// as restore would before it puts it at FILE, so FILE is always a whole
// backup or absent, and a killed backup leaves no file behind.
func backup(args []string) error {
	return runClient("backup", "FILE", 1, args, func(ctx context.Context, conn *grpc.ClientConn, a []string) (proto.Message, error) {
		stream, err := usherv1.NewAdminServiceClient(conn).Backup(ctx, &usherv1.BackupRequest{})
		if err != nil {
			return nil, err
		}
		head, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		m := storage.Manifest{Format: head.GetFormat(), Revision: authz.Revision(head.GetRevision()), Size: head.GetSize()}
		if copy(m.SHA256[:], head.GetSha256()) != len(m.SHA256) {
			return nil, fmt.Errorf("the server announced a SHA-256 of %d bytes, want %d", len(head.GetSha256()), len(m.SHA256))
		}
		if err := bolt.SaveBackup(a[0], m, &chunkReader{stream: stream}); err != nil {
			return nil, err
		}
		return head, nil
	})
}

// chunkReader reads the bytes of a Backup stream's messages after the first.
type chunkReader struct {
	stream grpc.ServerStreamingClient[usherv1.BackupResponse]
	chunk  []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.chunk) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the stream's end
		}
		r.chunk = msg.GetChunk()
	}
	n := copy(p, r.chunk)
	r.chunk = r.chunk[n:]
	return n, nil
}

// restore puts a backup in place of a stopped server's data file.
func restore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	data := fs.String("data", envOr("USHER_DATA", "data/usher.db"), "bbolt data file to restore to (env USHER_DATA); its server must be stopped")
	force := fs.Bool("force", false, "replace the data file if it exists")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: usher restore [flags] FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want 1 argument, got %d", fs.NArg())
	}
	if _, err := os.Stat(*data); err == nil && !*force {
		return fmt.Errorf("%s exists: stop its server and pass --force to replace it", *data)
	}
	rev, err := bolt.Restore(fs.Arg(0), *data, *force)
	if err != nil {
		return err
	}
	fmt.Printf("usher: restored %s to %s (revision %d)\n", fs.Arg(0), *data, rev)
	return nil
}
