package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage/bolt"
)

// backup saves a running server's data file: the copy is written beside
// FILE, checked to open as the revision the server announced, and only then
// renamed to FILE, so FILE is always a whole backup or absent.
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
		err = bolt.ReplaceFile(a[0], func(f *os.File) error {
			var n int64
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				k, err := f.Write(msg.GetChunk())
				n += int64(k)
				if err != nil {
					return err
				}
			}
			if n != head.GetSize() {
				return fmt.Errorf("the server sent %d bytes, announced %d", n, head.GetSize())
			}
			rev, err := bolt.Verify(f.Name())
			if err != nil {
				return err
			}
			if uint64(rev) != head.GetRevision() {
				return fmt.Errorf("the copy holds revision %d, the server announced %d", rev, head.GetRevision())
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a[0], err)
		}
		return head, nil
	})
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
