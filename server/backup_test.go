package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

// storeSource is the BackupSource of a store that serveWith opens after the
// option naming it is made.
type storeSource struct{ store atomic.Pointer[bolt.Store] }

func (s *storeSource) Backup(w io.Writer, begin func(storage.Manifest) error) (storage.Manifest, error) {
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
	if head.GetRevision() == 0 || head.GetSize() == 0 || head.GetFormat() != 2 || len(head.GetSha256()) != sha256.Size || len(head.GetChunk()) != 0 {
		t.Fatalf("first message %v, want the manifest (revision, size, format 2, SHA-256) and no bytes", head)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	messages := 1
	digest := sha256.New()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Backup after %d messages: %v", messages, err)
		}
		messages++
		if msg.GetRevision() != 0 || msg.GetSize() != 0 || msg.GetFormat() != 0 || msg.GetSha256() != nil || len(msg.GetChunk()) == 0 || len(msg.GetChunk()) > 256<<10 {
			t.Fatalf("message %d: revision %d, size %d, format %d, SHA-256 %x, %d bytes; want only 1 to 256 KiB of bytes",
				messages, msg.GetRevision(), msg.GetSize(), msg.GetFormat(), msg.GetSha256(), len(msg.GetChunk()))
		}
		f.Write(msg.GetChunk())
		digest.Write(msg.GetChunk())
	}
	if info, _ := f.Stat(); info.Size() != head.GetSize() {
		t.Fatalf("received %d bytes, announced %d", info.Size(), head.GetSize())
	}
	if got := digest.Sum(nil); !bytes.Equal(got, head.GetSha256()) {
		t.Fatalf("received bytes of SHA-256 %x, announced %x", got, head.GetSha256())
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

// heldSource is a BackupSource whose copies each stay in progress, as one
// whose client has stopped reading does, until release is closed.
type heldSource struct {
	started chan struct{}
	release chan struct{}
}

func (s *heldSource) Backup(w io.Writer, begin func(storage.Manifest) error) (storage.Manifest, error) {
	s.started <- struct{}{}
	<-s.release
	m := storage.Manifest{Revision: 1, Size: 1, Format: 2}
	if err := begin(m); err != nil {
		return storage.Manifest{}, err
	}
	_, err := w.Write([]byte{0})
	return m, err
}

// TestBackupsInProgressAreBounded proves that a server takes at most
// MaxBackups at once, each a copy of its data file on its disk, and
// refuses one more, naming the limit, without starting its copy.
func TestBackupsInProgressAreBounded(t *testing.T) {
	src := &heldSource{started: make(chan struct{}, 2*server.MaxBackups), release: make(chan struct{})}
	addr, _ := serveWith(t, t.TempDir(), slog.New(slog.DiscardHandler), server.WithBackup(src))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	admin := usherv1.NewAdminServiceClient(conn)
	backup := func() (usherv1.AdminService_BackupClient, error) {
		stream, err := admin.Backup(callCtx(t), &usherv1.BackupRequest{})
		if err != nil {
			return nil, err
		}
		return stream, nil
	}
	var held []usherv1.AdminService_BackupClient
	for range server.MaxBackups {
		stream, err := backup()
		if err != nil {
			t.Fatal(err)
		}
		<-src.started // its copy has begun
		held = append(held, stream)
	}
	stream, err := backup()
	if err == nil {
		_, err = stream.Recv()
	}
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "BACKUP_LIMIT", meta: map[string]string{"limit": fmt.Sprint(server.MaxBackups)}})
	if n := len(src.started); n != 0 {
		t.Errorf("the refused backup began %d copies, want none", n)
	}
	close(src.release)
	for i, stream := range held {
		for {
			if _, err := stream.Recv(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("held backup %d: %v", i, err)
				}
				break
			}
		}
	}
	// Their places came back: one more is taken.
	stream, err = backup()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("a backup once the others ended: %v", err)
			}
			break
		}
	}
}

// noRoomSource refuses every copy as a store does whose disk lacks room.
type noRoomSource struct{}

func (noRoomSource) Backup(io.Writer, func(storage.Manifest) error) (storage.Manifest, error) {
	return storage.Manifest{}, fmt.Errorf("storage: backup data/usher.db: %w: a copy of the data file takes 8192 bytes", storage.ErrNoRoom)
}

// TestABackupWithoutRoomOnTheDiskIsResourceExhausted proves that a backup
// refused for the room its copy would take is told so, as a resource
// exhausted rather than a fault of the server.
func TestABackupWithoutRoomOnTheDiskIsResourceExhausted(t *testing.T) {
	addr, _ := serveWith(t, t.TempDir(), slog.New(slog.DiscardHandler), server.WithBackup(noRoomSource{}))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := usherv1.NewAdminServiceClient(conn).Backup(callCtx(t), &usherv1.BackupRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	st := wantCode(t, err, codes.ResourceExhausted)
	wantDetails(t, st, refusal{reason: "BACKUP_NO_ROOM"})
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

// slowConn lets its reader have about rate bytes a second, as a client on a
// slow link, or one that reads slowly, would.
type slowConn struct {
	net.Conn
	rate int
}

func (c *slowConn) Read(p []byte) (int, error) {
	const step = 64
	time.Sleep(time.Second * step / time.Duration(c.rate))
	return c.Conn.Read(p[:min(len(p), step)])
}

// A backup read at 1 KiB/s takes hours; every write meanwhile, including
// those that make bbolt grow (and so remap) the file, is acknowledged within
// a second, as without a backup.
func TestASlowBackupReaderDoesNotHoldUpWrites(t *testing.T) {
	conn, store := serveBackups(t)
	admin := usherv1.NewAdminServiceClient(conn)
	// The usual latency, on this machine as loaded as it is now: a grant
	// during the backup may take a second, or five times the slowest of
	// these if that is more.
	var usual time.Duration
	for i := range 10 {
		began := time.Now()
		if _, err := admin.Grant(callCtx(t), &usherv1.GrantRequest{Subject: fmt.Sprintf("user:before-%d", i), Role: "host", Resource: "root"}); err != nil {
			t.Fatal(err)
		}
		usual = max(usual, time.Since(began))
	}
	grantBound := max(time.Second, 5*usual)
	slow, err := grpc.NewClient(conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return &slowConn{Conn: c, rate: 1024}, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	backupCtx, stop := context.WithCancel(t.Context())
	defer stop()
	stream, err := usherv1.NewAdminServiceClient(slow).Backup(backupCtx, &usherv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	reading := time.Now()
	head, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(store.Path())
	if err != nil {
		t.Fatal(err)
	}
	start := info.Size()

	// Grants one at a time through the API, and between them bulk commits
	// that grow the file: bbolt maps a power of two at least the file's
	// size, so a file grown past twice its size has been remapped at least
	// once. A bulk commit takes longer than a grant on a loaded machine, but
	// one held up by the backup would wait until its end, hours away.
	const bulkBound = 5 * time.Second
	var slowestGrant, slowestBulk time.Duration
	grants := 0
	for i := 0; info.Size() <= 2*start; i++ {
		if i == 200 {
			t.Fatalf("the file grew only from %d to %d bytes in 200 bulk commits", start, info.Size())
		}
		began := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), grantBound)
		_, err := admin.Grant(ctx, &usherv1.GrantRequest{Subject: fmt.Sprintf("user:w%d", i), Role: "host", Resource: "root"})
		cancel()
		if err != nil {
			t.Fatalf("Grant %d while a backup is read at 1 KiB/s: %v (after %s)", i, err, time.Since(began))
		}
		slowestGrant = max(slowestGrant, time.Since(began))
		grants++

		began = time.Now()
		var bulk []authz.Change
		for j := range 500 {
			bulk = append(bulk, authz.Change{Op: authz.OpPutGrant, Grant: &authz.Grant{Subject: fmt.Sprintf("user:grow-%d-%d", i, j), Role: "user", Resource: "root"}})
		}
		committed := make(chan error, 1)
		go func() {
			_, err := store.Commit(context.Background(), []authz.Write{{Set: authz.ChangeSet{Caller: "test", Changes: bulk}}})
			committed <- err
		}()
		select {
		case err := <-committed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(bulkBound):
			stop() // lets the commit through, if the backup holds it up
			t.Fatalf("a commit of 500 grants waited more than %s while a backup is read at 1 KiB/s", bulkBound)
		}
		slowestBulk = max(slowestBulk, time.Since(began))
		if info, err = os.Stat(store.Path()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("while a %d-byte backup was read at 1 KiB/s, the file grew from %d to %d bytes; the slowest of %d grants took %s (%s before the backup), of as many commits of 500 grants %s",
		head.GetSize(), start, info.Size(), grants, slowestGrant, usual, slowestBulk)
	// At 1 KiB/s the stream has carried a sliver of the copy: the writes
	// ran while it was read, not after.
	if read := int64(time.Since(reading).Seconds() * 1024); read > head.GetSize()/2 {
		t.Fatalf("the writes took %s: long enough to read half the backup at 1 KiB/s", time.Since(reading))
	}
}

// A caller removed from the callers file keeps none of its streams: a
// Backup it opened sends it nothing more of the copy, and a reflection
// stream answers it no more, each ending with the refusal a new call would
// get, as its Watch does.
func TestARemovedCallersStreamsSendNothingMore(t *testing.T) {
	admin, other := newToken(t), newToken(t)
	file := filepath.Join(t.TempDir(), "callers.yaml")
	writeCallers(t, file, "callers:\n  - {name: ops, kind: admin, token_sha256: "+hashOf(admin)+"}\n"+
		"  - {name: backend, kind: admin, token_sha256: "+hashOf(other)+"}\n")
	callers, err := server.NewCallerSource(file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	src := &heldSource{started: make(chan struct{}, 1), release: make(chan struct{})}
	addr, _ := serveWith(t, t.TempDir(), slog.New(slog.DiscardHandler), server.WithCallers(callers), server.WithBackup(src))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(admin)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	watch, err := usherv1.NewAuthorizationServiceClient(conn).Watch(callCtx(t), &usherv1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	backup, err := usherv1.NewAdminServiceClient(conn).Backup(callCtx(t), &usherv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-src.started // its copy has begun
	reflect, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	listServices := &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}
	if err := reflect.Send(listServices); err != nil {
		t.Fatal(err)
	}
	if _, err := reflect.Recv(); err != nil {
		t.Fatalf("reflection: %v", err)
	}

	writeCallers(t, file, "callers:\n  - {name: backend, kind: admin, token_sha256: "+hashOf(other)+"}\n")
	if err := callers.Reload(); err != nil {
		t.Fatal(err)
	}
	// Once the Watch has ended, so has every stream of the caller.
	for err == nil {
		_, err = watch.Recv()
	}
	removed := refusal{reason: "BAD_TOKEN"}
	wantDetails(t, wantCode(t, err, codes.Unauthenticated), removed)

	close(src.release)
	if resp, err := backup.Recv(); err == nil {
		t.Errorf("the Backup of a caller removed before its copy was sent sent %v; want it ended Unauthenticated with nothing", resp)
	} else {
		wantDetails(t, wantCode(t, err, codes.Unauthenticated), removed)
	}

	if err := reflect.Send(listServices); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if answer, err := reflect.Recv(); err == nil {
		t.Errorf("the reflection stream of a removed caller answered %v; want it ended Unauthenticated", answer)
	} else {
		wantDetails(t, wantCode(t, err, codes.Unauthenticated), removed)
	}
}
