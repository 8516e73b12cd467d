package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

func backupCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Save a consistent copy of a running server's data file",
		Long: `Backup saves a consistent copy of a running server's bbolt data file at
FILE, taken while writes go on, and prints its manifest: the format,
revision, size and SHA-256 of the copy. The copy is checked as restore would
check it before it is put at FILE, so FILE is always a whole backup or
absent, and a killed backup leaves no file behind. Backup is an AdminService
call: it needs an admin caller's token where the server has a callers file.`,
		Example: `  usher backup backups/usher-$(date +%F).db
  usher backup /backups/nightly.db --addr usher:7070 --tls-ca ca.crt --token-file /etc/usher/token --timeout 30m`,
		Args: argsExactly("FILE"),
	}
	c := addClientFlags(cmd, callTimeout)
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		return c.call(cmd, func(ctx context.Context, conn *grpc.ClientConn) (proto.Message, error) {
			return backup(ctx, conn, a[0])
		}, nil)
	}
	return cmd
}

// backup saves a running server's data file as a backup: the copy the
// server streams, followed by its manifest. bolt.SaveBackup checks the file
// as restore would before it puts it at file, so file is always a whole
// backup or absent, and a killed backup leaves no file behind.
func backup(ctx context.Context, conn *grpc.ClientConn, file string) (*usherv1.BackupResponse, error) {
	stream, err := admin(conn).Backup(ctx, &usherv1.BackupRequest{})
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
	if err := bolt.SaveBackup(file, m, &chunkReader{stream: stream}); err != nil {
		return nil, err
	}
	return head, nil
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

func restoreCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Put a backup in place of a stopped server's data file",
		Long: `Restore checks the backup FILE (its manifest, length, SHA-256, revision and
soundness) and puts the copy in place of the data file --data, whose server
must be stopped. An existing data file is replaced only with --force, by a
copy of its mode and owner; one at a later revision than the backup's, or
of another history (its change set at its revision is not the backup's),
is replaced by a copy that goes on past its revision, the change log
compacted through it, so that clients resuming from its revisions are told
to reload. A backup that fails a check is refused, naming the check, and
--data is left untouched.`,
		Example: `  usher restore backups/usher-2026-12-01.db --data data/usher.db
  usher restore --data /var/lib/usher/usher.db --force /backups/nightly.db`,
		Args: argsExactly("FILE"),
	}
	fs := cmd.Flags()
	data := fs.String("data", envOr("USHER_DATA", "data/usher.db"), "bbolt data file to restore to (env USHER_DATA); its server must be stopped")
	force := fs.Bool("force", false, "replace the data file if it exists")
	cmd.RunE = func(cmd *cobra.Command, a []string) error {
		if _, err := os.Stat(*data); err == nil && !*force {
			return fmt.Errorf("%s exists: stop its server and pass --force to replace it", *data)
		}
		rev, err := bolt.Restore(a[0], *data, *force)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "usher: restored %s to %s (revision %d)\n", a[0], *data, rev)
		return nil
	}
	return cmd
}
