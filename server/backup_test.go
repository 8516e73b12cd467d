package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage/bolt"
)

// storeSource is the BackupSource of a store that serveWith opens after the
// option naming it is made.
type storeSource struct{ store atomic.Pointer[bolt.Store] }

func (s *storeSource) Backup(w io.Writer, begin func(authz.Revision, int64) error) (authz.Revision, error) {
	return s.store.Load().Backup(w, begin)
}

// serveBackups starts a server with WithBackup on its own store, which holds
// enough grants for a copy to span several messages, and returns a client.
func serveBackups(t *testing.T, opts ...grpc.ServerOption) (*grpc.ClientConn, *bolt.Store) {
	t.Helper()
	src := &storeSource{}
	addr, store := serveWith(t, t.TempDir(), slog.New(slog.DiscardHandler), append(opts, server.WithBackup(src))...)
	src.store.Store(store)
	var bulk []authz.Change
	for i := range 5000 {
		bulk = append(bulk, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:bulk-%d", i), Role: "user", Resource: "root"}})
	}
	if _, err := store.Commit(context.Background(), []authz.Write{{Set: authz.ChangeSet{Caller: "test", Changes: bulk}}}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, store
}

// receiveBackup reads a whole Backup stream into a file in dir and returns
// the first message and the number of messages.
func receiveBackup(t *testing.T, conn *grpc.ClientConn, path string) (*usherv1.BackupResponse, int) {
	t.Helper()
	stream, err := usherv1.NewAdminServiceClient(conn).Backup(callCtx(t), &usherv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := stream.Recv()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if head.GetRevision() == 0 || head.GetSize() == 0 || len(head.GetChunk()) != 0 {
		t.Fatalf("first message %v, want the revision and size and no bytes", head)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	messages := 1
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Backup after %d messages: %v", messages, err)
		}
		messages++
		if msg.GetRevision() != 0 || msg.GetSize() != 0 || len(msg.GetChunk()) == 0 || len(msg.GetChunk()) > 256<<10 {
			t.Fatalf("message %d: revision %d, size %d, %d bytes; want only 1 to 256 KiB of bytes", messages, msg.GetRevision(), msg.GetSize(), len(msg.GetChunk()))
		}
		f.Write(msg.GetChunk())
	}
	if info, _ := f.Stat(); info.Size() != head.GetSize() {
		t.Fatalf("received %d bytes, announced %d", info.Size(), head.GetSize())
	}
	return head, messages
}

func TestBackupStreamsAConsistentCopyWhileWritesContinue(t *testing.T) {
	conn, store := serveBackups(t)
	admin := usherv1.NewAdminServiceClient(conn)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := admin.Grant(callCtx(t), &usherv1.GrantRequest{Subject: fmt.Sprintf("user:w%d", i), Role: "host", Resource: "root"}); err != nil {
				t.Errorf("Grant during the backup: %v", err)
				return
			}
			written.Add(1)
		}
	})
	dir := t.TempDir()
	var revs []uint64
	for i := range 3 {
		for written.Load() < int64(3*(i+1)) {
			time.Sleep(time.Millisecond)
		}
		path := filepath.Join(dir, fmt.Sprintf("backup-%d.db", i))
		head, messages := receiveBackup(t, conn, path)
		if messages < 3 {
			t.Errorf("a %d-byte copy came in %d messages, want several chunks", head.GetSize(), messages)
		}
		rev, err := bolt.Verify(path)
		if err != nil || uint64(rev) != head.GetRevision() {
			t.Fatalf("Verify(copy) = %d, %v; want the announced revision %d", rev, err, head.GetRevision())
		}
		revs = append(revs, head.GetRevision())
	}
	close(stop)
	wg.Wait()
	if revs[0] == revs[2] {
		t.Errorf("every copy is at revision %d: the writes did not continue during the backups", revs[0])
	}
	if now, _ := store.Revision(context.Background()); uint64(now) <= revs[0] {
		t.Errorf("the store is at revision %d, the first copy at %d", now, revs[0])
	}
}

func TestBackupEndsWhenTheClientGoesAway(t *testing.T) {
	conn, store := serveBackups(t)
	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := usherv1.NewAdminServiceClient(conn).Backup(ctx, &usherv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	// Close waits for every read transaction: it returns only once the
	// abandoned copy has let go of its own.
	closed := make(chan error, 1)
	go func() { closed <- store.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the store could not close 5s after the backup's client went away: the copy still holds its transaction")
	}
}

func TestBackupWithoutASourceIsUnimplemented(t *testing.T) {
	f := newServer(t)
	stream, err := f.admin.Backup(f.ctx(), &usherv1.BackupRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.Unimplemented)
}

func TestOnlyAdminCallersMayBackUp(t *testing.T) {
	admin, check := newToken(t), newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: ops, kind: admin, token_sha256: "+hashOf(admin)+"}\n"+
		"  - {name: sidecar, kind: check, token_sha256: "+hashOf(check)+"}\n")
	src, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := serveBackups(t, server.WithCallers(src))
	backup := func(token string) error {
		var opts []grpc.CallOption
		if token != "" {
			opts = append(opts, grpc.PerRPCCredentials(bearer(token)))
		}
		stream, err := usherv1.NewAdminServiceClient(conn).Backup(callCtx(t), &usherv1.BackupRequest{}, opts...)
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	wantCode(t, backup(""), codes.Unauthenticated)
	wantCode(t, backup(check), codes.PermissionDenied)
	if err := backup(admin); err != nil {
		t.Fatalf("Backup by an admin caller: %v", err)
	}
}
