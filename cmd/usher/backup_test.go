package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// answers is everything a client can ask of the backup test's world, as the
// server answered at one revision.
type answers struct {
	revision  uint64
	policy    *usherv1.Policy
	grants    map[string][]*usherv1.Grant // by subject
	decisions []*usherv1.Decision
}

var (
	backupSubjects    = []string{"user:ann", "user:ben", "user:cat", "user:dov", "user:eve", "user:fay"}
	backupRoles       = []string{"owner", "admin", "host", "moderator", "user", "call-member"}
	backupPermissions = []string{"join-call", "end-call", "account.manage", "usher.resources.write"}
)

// backupWorld makes random writes of every kind through one connection, one
// at a time, so that between two writes the server's state is exactly the
// revision the last one answered.
type backupWorld struct {
	t      *testing.T
	conn   *grpc.ClientConn
	r      *rand.Rand
	events []string // registered, in order
	next   int
}

func (w *backupWorld) resources() []string {
	return append([]string{"root", "account:acme", "workspace:acme-live"}, w.events...)
}

// write makes one random write and returns the revision it answered. A
// revoke or unblock of nothing is refused and changes nothing; it is
// retried as another write.
func (w *backupWorld) write(ctx context.Context) uint64 {
	w.t.Helper()
	for {
		rev, err := w.try(ctx)
		if status.Code(err) == codes.NotFound {
			continue
		}
		if err != nil {
			w.t.Errorf("write: %v", err)
		}
		return rev
	}
}

func (w *backupWorld) try(ctx context.Context) (uint64, error) {
	admin := usherv1.NewAdminServiceClient(w.conn)
	pick := func(s []string) string { return s[w.r.IntN(len(s))] }
	subject, resource := pick(backupSubjects), pick(w.resources())
	var rev interface{ GetRevision() uint64 }
	var err error
	switch n := w.r.IntN(100); {
	case n < 30:
		rev, err = admin.Grant(ctx, &usherv1.GrantRequest{Subject: subject, Role: pick(backupRoles), Resource: resource})
	case n < 45:
		rev, err = admin.Revoke(ctx, &usherv1.RevokeRequest{Subject: subject, Role: pick(backupRoles), Resource: resource})
	case n < 55:
		rev, err = admin.Block(ctx, &usherv1.BlockRequest{Subject: subject, Resource: resource, Permissions: []string{pick(backupPermissions[:2])}, Reason: "test"})
	case n < 62:
		rev, err = admin.Unblock(ctx, &usherv1.UnblockRequest{Subject: subject, Resource: resource})
	case n < 85 || len(w.events) == 0:
		event := fmt.Sprintf("event:e%d", w.next)
		w.next++
		// On an actor's behalf, so that the creator role comes with it.
		rev, err = admin.PutResource(ctx, &usherv1.PutResourceRequest{Name: event, Parent: "workspace:acme-live", Actor: "user:ann"})
		if err == nil {
			w.events = append(w.events, event)
		}
	default:
		i := w.r.IntN(len(w.events))
		rev, err = admin.DeleteResource(ctx, &usherv1.DeleteResourceRequest{Name: w.events[i]})
		if err == nil {
			w.events = slices.Delete(w.events, i, i+1)
		}
	}
	if err != nil {
		return 0, err
	}
	return rev.GetRevision(), nil
}

// ask reads everything at the server's current revision; nothing may write
// meanwhile.
func ask(t *testing.T, conn *grpc.ClientConn, resources []string) answers {
	t.Helper()
	ctx := t.Context()
	admin := usherv1.NewAdminServiceClient(conn)
	exp, err := admin.ExportPolicy(ctx, &usherv1.ExportPolicyRequest{})
	if err != nil {
		t.Fatalf("ExportPolicy: %v", err)
	}
	a := answers{revision: exp.GetRevision(), policy: exp.GetPolicy(), grants: map[string][]*usherv1.Grant{}}
	for _, subject := range append(slices.Clone(backupSubjects), "user:nobody") {
		resp, err := admin.ListGrants(ctx, &usherv1.ListGrantsRequest{Subject: subject, PageSize: 1000})
		if err != nil || resp.GetNextPageToken() != "" || resp.GetRevision() != a.revision {
			t.Fatalf("ListGrants(%s): %v, more pages %v, at revision %d of %d", subject, err, resp.GetNextPageToken() != "", resp.GetRevision(), a.revision)
		}
		a.grants[subject] = resp.GetGrants()
	}
	req := &usherv1.CheckBatchRequest{}
	for _, subject := range backupSubjects {
		for _, permission := range backupPermissions {
			for _, resource := range resources {
				req.Checks = append(req.Checks, &usherv1.CheckItem{Subject: subject, Permission: permission, Resource: resource})
			}
		}
	}
	resp, err := usherv1.NewAuthorizationServiceClient(conn).CheckBatch(ctx, req)
	if err != nil || resp.GetRevision() != a.revision {
		t.Fatalf("CheckBatch: %v, at revision %d of %d", err, resp.GetRevision(), a.revision)
	}
	a.decisions = resp.GetDecisions()
	return a
}

func (a answers) diff(b answers) string {
	var d []string
	if a.revision != b.revision {
		d = append(d, fmt.Sprintf("revision %d, want %d", a.revision, b.revision))
	}
	if !proto.Equal(a.policy, b.policy) {
		d = append(d, fmt.Sprintf("policy:\n%v\nwant\n%v", a.policy, b.policy))
	}
	// A subject's grants come in an order of the index's, which numbers
	// resources as it learns of them: a restored server's comes from the
	// file, the source's from the order of the writes.
	byResource := func(x, y *usherv1.Grant) int {
		return cmp.Or(strings.Compare(x.GetResource(), y.GetResource()), strings.Compare(x.GetRole(), y.GetRole()))
	}
	for subject, want := range b.grants {
		got := slices.SortedFunc(slices.Values(a.grants[subject]), byResource)
		want = slices.SortedFunc(slices.Values(want), byResource)
		if !slices.EqualFunc(got, want, func(x, y *usherv1.Grant) bool { return proto.Equal(x, y) }) {
			d = append(d, fmt.Sprintf("grants of %s: %v, want %v", subject, got, want))
		}
	}
	if !slices.EqualFunc(a.decisions, b.decisions, func(x, y *usherv1.Decision) bool { return proto.Equal(x, y) }) {
		for i := range min(len(a.decisions), len(b.decisions)) {
			if !proto.Equal(a.decisions[i], b.decisions[i]) {
				d = append(d, fmt.Sprintf("decision %d: %v, want %v", i, a.decisions[i], b.decisions[i]))
			}
		}
	}
	return strings.Join(d, "\n")
}

var backupPrinted = regexp.MustCompile(`"revision": "(\d+)"`)

// TestBackupAndRestore backs up a server while a writer keeps writing, and
// proves that the restored file answers exactly as the source did at the
// backup's revision: the writer reads everything after each of its writes,
// so the source's answers at every revision are on record.
func TestBackupAndRestore(t *testing.T) {
	bin, dir := buildUsher(t)
	sourceData := filepath.Join(dir, "source", "usher.db")
	source := serveOn(t, bin, sourceData)
	conn := source.dial(t)
	admin := usherv1.NewAdminServiceClient(conn)
	for _, r := range []*usherv1.PutResourceRequest{{Name: "account:acme"}, {Name: "workspace:acme-live", Parent: "account:acme"}} {
		if _, err := admin.PutResource(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.Grant(t.Context(), &usherv1.GrantRequest{Subject: "user:ann", Role: "owner", Resource: "account:acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutRole(t.Context(), &usherv1.PutRoleRequest{Role: &usherv1.Role{
		Name: "stage-manager", Scope: "account:acme", Permissions: []string{"join-call", "end-call"}, AssignableRoles: []string{"user"}}}); err != nil {
		t.Fatal(err)
	}

	w := &backupWorld{t: t, conn: conn, r: rand.New(rand.NewPCG(1, 2))}
	record := map[uint64]answers{}
	resourcesAt := map[uint64][]string{}
	observe := func() {
		res := w.resources()
		a := ask(t, conn, res)
		record[a.revision], resourcesAt[a.revision] = a, res
	}
	for range 20 {
		w.write(t.Context())
	}
	observe()

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var during []uint64 // revisions written while `usher backup` ran
	var mu sync.Mutex
	wg.Go(func() {
		for ctx.Err() == nil {
			rev := w.write(context.Background())
			observe()
			mu.Lock()
			during = append(during, rev)
			mu.Unlock()
		}
	})
	for { // a few writes first, so that the backup starts among them
		mu.Lock()
		n := len(during)
		mu.Unlock()
		if n >= 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	first := len(during)
	mu.Unlock()
	backup := filepath.Join(dir, "backups", "usher.backup")
	os.MkdirAll(filepath.Dir(backup), 0o750)
	out, err := exec.Command(bin, "backup", "--addr", source.addr, backup).CombinedOutput()
	mu.Lock()
	last := len(during)
	mu.Unlock()
	// Some writes after the backup, which the restored file must not hold.
	for {
		mu.Lock()
		n := len(during)
		mu.Unlock()
		if n >= last+3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatalf("usher backup: %v\n%s", err, out)
	}
	m := backupPrinted.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("usher backup printed no revision:\n%s", out)
	}
	rev, _ := strconv.ParseUint(m[1], 10, 64)
	t.Logf("backup at revision %d; %d writes during the backup command (revisions %v), %d in all", rev, last-first, during[first:last], len(during))
	if last == first {
		t.Errorf("no write was acknowledged while usher backup ran: the backup was not taken among writes")
	}
	want, ok := record[rev]
	if !ok {
		t.Fatalf("the backup's revision %d is none the writer answered", rev)
	}
	// Writes are recorded after they are read back, so only the write
	// after the first one recorded after the command is surely later.
	if rev < during[first-1] || rev >= during[last+1] {
		t.Errorf("the backup's revision %d is not between %d, acknowledged before the command, and %d, made after it", rev, during[first-1], during[last+1])
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "backups", ".*")); len(leftovers) != 0 {
		t.Errorf("usher backup left temporary files: %v", leftovers)
	}

	restored := filepath.Join(dir, "restored", "usher.db")
	usher := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := usher("restore", "--data", sourceData, "--force", backup); err == nil || !strings.Contains(out, "in use") {
		t.Errorf("restore over the running source's file: %v\n%s\nwant a refusal saying it is in use", err, out)
	}
	// A flipped bit anywhere in the backup, and restore refuses it.
	whole, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "backups", "damaged.backup")
	whole[len(whole)/3] ^= 0x08
	os.WriteFile(damaged, whole, 0o600)
	if out, err := usher("restore", "--data", restored, damaged); err == nil || !strings.Contains(out, "the backup is damaged") {
		t.Errorf("restore of a backup with a flipped bit: %v\n%s\nwant a refusal saying it is damaged", err, out)
	}
	if _, err := os.Stat(filepath.Dir(restored)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused restore made %s (stat: %v)", filepath.Dir(restored), err)
	}
	out2, err := usher("restore", "--data", restored, backup)
	if err != nil || !strings.Contains(out2, fmt.Sprintf("(revision %d)", rev)) {
		t.Fatalf("usher restore: %v\n%s", err, out2)
	}
	if out, err := usher("restore", "--data", restored, backup); err == nil || !strings.Contains(out, "exists") {
		t.Errorf("a second restore to the same file: %v\n%s\nwant a refusal saying it exists", err, out)
	}

	copied := serveOn(t, bin, restored)
	if copied.revision != rev {
		t.Errorf("the restored server serves revision %d, want the backup's %d", copied.revision, rev)
	}
	got := ask(t, copied.dial(t), resourcesAt[rev])
	if d := got.diff(want); d != "" {
		t.Errorf("the restored server answers otherwise than the source did at revision %d:\n%s", rev, d)
	}
	if now := ask(t, conn, w.resources()); now.revision <= rev || now.diff(want) == "" {
		t.Errorf("the source is at revision %d and answers as at the backup's %d: the writes after the backup are not a test", now.revision, rev)
	}
}

func TestABackupOverTheServersOwnFileIsRefused(t *testing.T) {
	bin, dir := buildUsher(t)
	data := filepath.Join(dir, "usher.db")
	p := serveOn(t, bin, data)
	admin := usherv1.NewAdminServiceClient(p.dial(t))
	if _, err := admin.PutResource(t.Context(), &usherv1.PutResourceRequest{Name: "call:before"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "backup", "--addr", p.addr, data).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("usher backup onto the running server's data file: %v\n%s\nwant a refusal saying it is in use", err, out)
	}
	after, err := admin.PutResource(t.Context(), &usherv1.PutResourceRequest{Name: "call:after"})
	if err != nil {
		t.Fatal(err)
	}
	p.kill(t)

	restarted := serveOn(t, bin, data)
	if restarted.revision != after.GetRevision() {
		t.Errorf("restarted, the server is at revision %d, want %d, the last acknowledged", restarted.revision, after.GetRevision())
	}
	if _, err := usherv1.NewAdminServiceClient(restarted.dial(t)).GetResource(t.Context(), &usherv1.GetResourceRequest{Name: "call:after"}); err != nil {
		t.Errorf("the write acknowledged after the backup is lost: %v", err)
	}
}
