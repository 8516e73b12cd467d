// Package etcd is Usher's cluster storage backend: the state, the change log
// and the guard keys of conditional commits live in an etcd cluster under a
// key prefix, so that any number of Usher replicas, each with the whole index
// in memory, can write and follow one history.
//
// Keys under the prefix:
//
//	rev                    the latest revision (8 bytes, big-endian)
//	compacted              the revision the change log was compacted up to
//	e/<kind>/<key>         an entity, in the record format of package storage
//	log/<16 hex digits>    a committed change set, by revision
//	v/<guard key>          the revision that last touched a guard key
//
// A commit reads the revision key and the guard keys of its writes, decides
// which writes conflict, and commits the others in one etcd transaction that
// compares every key it read against the mod revision it saw: if anything
// moved in between, it reads again. Revisions are Usher's own, consecutive
// and global across replicas; etcd's revision only orders the transactions.
//
// Nothing outside this package imports the etcd client.
package etcd

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
)

// Options tune New.
type Options struct {
	// Prefix is where Usher's keys live; default "/usher/".
	Prefix string
	// MaxTxnOps is the most operations one etcd transaction may hold, as
	// the cluster's --max-txn-ops says (etcd's default is 128). A batch of
	// writes that needs more is committed in several transactions, each
	// write whole in one; a single write that needs more is refused.
	MaxTxnOps int
	// MaxTxnBytes is the largest request one etcd transaction may be, in
	// bytes, as the cluster's --max-request-bytes says (etcd's default is
	// 1.5 MiB), counted from its keys and values with room for their
	// framing. Batches are split and single writes refused as for
	// MaxTxnOps.
	MaxTxnBytes int
	// Retain is how many change sets the log keeps; older ones are
	// compacted away by Compact, which the backend calls itself once the
	// log holds twice as many. 0 keeps everything.
	Retain authz.Revision
	// RetryConflicts bounds how often a commit reads again when another
	// replica committed between its read and its transaction.
	RetryConflicts int
}

// DefaultMaxTxnBytes is etcd's default --max-request-bytes, 1.5 MiB.
const DefaultMaxTxnBytes = 3 << 19

// DefaultRetain is how many change sets the log keeps by default: enough
// for a replica that was away for a while to catch up without a snapshot.
const DefaultRetain = 100_000

// Store is the etcd Backend.
type Store struct {
	cli    *clientv3.Client
	prefix string
	opts   Options

	mu     sync.Mutex
	closed bool
	done   chan struct{}
	// compacting is set while a compaction runs, so that commits start at
	// most one.
	compacting bool
}

var _ storage.Backend = (*Store)(nil)

// New returns a Store on cli. It does not close cli.
func New(cli *clientv3.Client, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "/usher/"
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.MaxTxnOps <= 0 {
		opts.MaxTxnOps = 128
	}
	if opts.MaxTxnBytes <= 0 {
		opts.MaxTxnBytes = DefaultMaxTxnBytes
	}
	if opts.RetryConflicts <= 0 {
		opts.RetryConflicts = 50
	}
	return &Store{cli: cli, prefix: opts.Prefix, opts: opts, done: make(chan struct{})}
}

func (s *Store) key(parts ...string) string { return s.prefix + strings.Join(parts, "") }

func (s *Store) revKey() string       { return s.key("rev") }
func (s *Store) compactedKey() string { return s.key("compacted") }
func (s *Store) logKey(r authz.Revision) string {
	return s.key("log/", fmt.Sprintf("%016x", uint64(r)))
}
func (s *Store) logPrefix() string { return s.key("log/") }
func (s *Store) entityKey(k storage.Kind, key []byte) string {
	return s.key("e/", k.String(), "/", string(key))
}
func (s *Store) entityPrefix(k storage.Kind) string { return s.key("e/", k.String(), "/") }

// versionKey holds a guard key's last touch. Guard keys may hold any byte
// but are compared whole, so they are hex-encoded to keep the keyspace
// readable with etcdctl.
func (s *Store) versionKey(guard string) string {
	return s.key("v/", hex.EncodeToString([]byte(guard)))
}

func encodeRev(r authz.Revision) string { return string(storage.EncodeRevision(r)) }

func decodeRev(b []byte) (authz.Revision, error) { return storage.DecodeRevision(b) }

func (s *Store) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return storage.ErrClosed
	}
	return nil
}

// Commit implements authz.Backend.
func (s *Store) Commit(ctx context.Context, ws []authz.Write) ([]authz.Committed, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	results := make([]authz.Committed, len(ws))
	// Encode every write first: a malformed one commits nothing.
	encoded := make([][]clientv3.Op, len(ws))
	costs := make([]txnCost, len(ws))
	for i, w := range ws {
		ops, err := s.entityOps(w.Set)
		if err != nil {
			return nil, fmt.Errorf("storage: commit: %w", err)
		}
		encoded[i] = ops
		if costs[i], err = s.costOf(w, ops); err != nil {
			return nil, fmt.Errorf("storage: commit: %w", err)
		}
	}
	// A write that no transaction can hold is refused alone, before any
	// is committed; the others go on without it.
	var fit []int // the indexes of those that fit
	var fitting []authz.Write
	var fittingOps [][]clientv3.Op
	var fittingCosts []txnCost
	for i := range ws {
		if err := s.tooLarge(txnBase(s).add(costs[i])); err != nil {
			results[i].Err = err
			continue
		}
		fit = append(fit, i)
		fitting, fittingOps, fittingCosts = append(fitting, ws[i]), append(fittingOps, encoded[i]), append(fittingCosts, costs[i])
	}
	committed, err := s.commitFitting(ctx, fitting, fittingOps, fittingCosts)
	if err != nil {
		return nil, err
	}
	for j, i := range fit {
		results[i] = committed[j]
	}
	return results, nil
}

// Fits implements authz.Sizer: the *authz.TooLargeError Commit would give
// w, as a transaction of its own, or nil.
func (s *Store) Fits(w authz.Write) error {
	ops, err := s.entityOps(w.Set)
	if err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	c, err := s.costOf(w, ops)
	if err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	return s.tooLarge(txnBase(s).add(c))
}

// txnCost is what a transaction, or a write's part of one, takes of the
// limits on it: operations (MaxTxnOps) and bytes (MaxTxnBytes).
type txnCost struct{ ops, bytes int }

func (c txnCost) add(o txnCost) txnCost { return txnCost{c.ops + o.ops, c.bytes + o.bytes} }

// opFraming is what an operation adds to a transaction's request besides
// its key and value, counted generously.
const opFraming = 32

// txnBase is what every commit's transaction takes whatever its writes:
// the revision key, compared and put.
func txnBase(s *Store) txnCost {
	return txnCost{ops: 1, bytes: 2 * (len(s.revKey()) + 8 + opFraming)}
}

// costOf is what w, encoded as ops, takes of a transaction: its entities,
// its log record and the version keys it touches. Guards are read apart
// and not compared (commitChunk): they take no room in it.
func (s *Store) costOf(w authz.Write, ops []clientv3.Op) (txnCost, error) {
	c := txnCost{ops: len(ops) + 1 + len(w.Touches)}
	for _, op := range ops {
		c.bytes += len(op.KeyBytes()) + len(op.ValueBytes()) + opFraming
	}
	// The record as commitChunk will encode it, at the longest revision.
	cs := w.Set
	cs.Revision = math.MaxUint64
	if cs.Time.IsZero() {
		cs.Time = time.Now()
	}
	record, err := storage.EncodeChangeSet(cs)
	if err != nil {
		return txnCost{}, err
	}
	c.bytes += len(s.logKey(cs.Revision)) + len(record) + opFraming
	for _, k := range w.Touches {
		c.bytes += len(s.versionKey(k)) + 8 + opFraming
	}
	return c, nil
}

// tooLarge refuses a transaction of cost c when it passes a limit.
func (s *Store) tooLarge(c txnCost) error {
	switch {
	case c.ops > s.opts.MaxTxnOps:
		return &authz.TooLargeError{Needs: c.ops, Limit: s.opts.MaxTxnOps, What: "operations in one etcd transaction",
			Hint: "raise etcd's --max-txn-ops, and with it MaxTxnOps: usher serve --etcd-max-txn-ops"}
	case c.bytes > s.opts.MaxTxnBytes:
		return &authz.TooLargeError{Needs: c.bytes, Limit: s.opts.MaxTxnBytes, What: "bytes in one etcd transaction",
			Hint: "raise etcd's --max-request-bytes, and with it MaxTxnBytes: usher serve --etcd-max-request-bytes"}
	}
	return nil
}

// commitFitting commits ws, encoded and of costs, each of which fits one
// transaction, in as few transactions as hold them.
func (s *Store) commitFitting(ctx context.Context, ws []authz.Write, encoded [][]clientv3.Op, costs []txnCost) ([]authz.Committed, error) {
	results := make([]authz.Committed, len(ws))
	if len(ws) == 0 {
		return results, nil
	}
	for start := 0; start < len(ws); {
		end := s.chunk(costs, start)
		if err := s.commitChunk(ctx, ws[start:end], encoded[start:end], results[start:end]); err != nil {
			if start == 0 {
				return nil, err
			}
			// Earlier chunks are committed: report the rest as failed
			// conflicts, to be planned again, rather than lose the
			// acknowledgements of the first. But for this chunk's writes
			// when they may have been committed: planned again, they
			// would be judged against themselves (a create_only
			// registration told its name exists), so each says so.
			for i := start; i < len(ws); i++ {
				results[i] = authz.Committed{Conflict: "(the backend failed: " + err.Error() + ")"}
				if i < end && errors.Is(err, authz.ErrOutcomeUnknown) {
					results[i] = authz.Committed{Err: err}
				}
			}
			break
		}
		start = end
	}
	s.maybeCompact(results)
	return results, nil
}

// chunk returns the end of the longest run of writes from start, of
// costs, that fit one transaction: at least the write at start, which fits
// one alone.
func (s *Store) chunk(costs []txnCost, start int) int {
	c := txnBase(s)
	for i := start; i < len(costs); i++ {
		c = c.add(costs[i])
		if i > start && s.tooLarge(c) != nil {
			return i
		}
	}
	return len(costs)
}

// entityOps are the puts and deletes of a change set's entities.
func (s *Store) entityOps(cs authz.ChangeSet) ([]clientv3.Op, error) {
	ops := make([]clientv3.Op, 0, len(cs.Changes))
	for i, c := range cs.Changes {
		e, err := storage.EntryOf(c)
		if err != nil {
			return nil, fmt.Errorf("change %d (%s): %w", i, c.Op, err)
		}
		k := s.entityKey(e.Kind, e.Key)
		if e.Value == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(e.Value)))
		}
	}
	return ops, nil
}

// commitChunk commits the writes that do not conflict, in one transaction.
func (s *Store) commitChunk(ctx context.Context, ws []authz.Write, encoded [][]clientv3.Op, results []authz.Committed) error {
	guards := map[string]bool{}
	for _, w := range ws {
		for _, g := range w.Guards {
			guards[g] = true
		}
	}
	keys := make([]string, 0, len(guards))
	for g := range guards {
		keys = append(keys, g)
	}
	sort.Strings(keys)
	for attempt := 0; ; attempt++ {
		if attempt == s.opts.RetryConflicts {
			for i := range results {
				results[i] = authz.Committed{Conflict: "(other replicas kept committing in between)"}
			}
			return nil
		}
		latest, revMod, compacted, seen, err := s.readGuards(ctx, keys)
		if err != nil {
			return err
		}
		// Decide, in order, which writes commit.
		touched := map[string]bool{}
		var ops []clientv3.Op
		var first string // the record of the first write committed, at latest+1
		next := latest
		for i, w := range ws {
			results[i] = authz.Committed{}
			if k := conflict(w, seen, touched, compacted); k != "" {
				results[i] = authz.Committed{Conflict: k, Latest: latest}
				continue
			}
			next++
			cs := w.Set
			cs.Revision = next
			if cs.Time.IsZero() {
				cs.Time = time.Now()
			}
			cs.Time = cs.Time.UTC()
			record, err := storage.EncodeChangeSet(cs)
			if err != nil {
				return fmt.Errorf("storage: commit: %w", err)
			}
			if next == latest+1 {
				first = string(record)
			}
			ops = append(ops, encoded[i]...)
			ops = append(ops, clientv3.OpPut(s.logKey(next), string(record)))
			for _, k := range w.Touches {
				touched[k] = true
			}
			results[i].Revision = next
		}
		if next == latest {
			return nil
		}
		for k := range touched {
			ops = append(ops, clientv3.OpPut(s.versionKey(k), encodeRev(next)))
		}
		ops = append(ops, clientv3.OpPut(s.revKey(), encodeRev(next)))
		// Every commit puts the revision key with the guards it touches:
		// the revision key unchanged since the guards were read, none of
		// them changed either.
		unchanged := clientv3.Compare(clientv3.ModRevision(s.revKey()), "=", revMod)
		tr, err := s.cli.Txn(ctx).If(unchanged).Then(ops...).Commit()
		if err != nil {
			// A transaction that timed out, or whose member went, may
			// have committed all the same: find out before saying.
			committed, serr := s.settle(revMod, latest, first)
			switch {
			case serr != nil:
				return fmt.Errorf("storage: commit: %w (%w: %v)", err, authz.ErrOutcomeUnknown, serr)
			case committed:
				return nil
			}
			return fmt.Errorf("storage: commit: %w", err)
		}
		if tr.Succeeded {
			return nil
		}
	}
}

// settleTimeout bounds settle's transaction.
const settleTimeout = 2 * time.Second

// settle reports whether a commit transaction whose answer was lost took
// effect: the one conditional on the revision key's etcd mod revision
// revMod, at which it held latest, that put record at latest+1 in the log.
// A fence that puts the revision key again under the same condition makes
// sure that a transaction not yet applied never will be.
func (s *Store) settle(revMod int64, latest authz.Revision, record string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	tr, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(s.revKey()), "=", revMod)).
		Then(clientv3.OpPut(s.revKey(), encodeRev(latest))).
		Else(clientv3.OpGet(s.logKey(latest + 1))).
		Commit()
	if err != nil {
		return false, err
	}
	if tr.Succeeded {
		return false, nil
	}
	kvs := tr.Responses[0].GetResponseRange().GetKvs()
	return len(kvs) > 0 && string(kvs[0].Value) == record, nil
}

// readGuards reads the latest revision (and the revision key's etcd mod
// revision), the log's horizon and the revision each guard key was last
// touched at, all at one etcd revision: in one transaction, and in more,
// pinned to the first one's etcd revision, when the guards are more than
// one transaction may read.
func (s *Store) readGuards(ctx context.Context, keys []string) (latest authz.Revision, revMod int64, compacted authz.Revision, seen map[string]authz.Revision, err error) {
	per := max(1, s.opts.MaxTxnOps-2)
	first := keys[:min(per, len(keys))]
	reads := []clientv3.Op{clientv3.OpGet(s.revKey()), clientv3.OpGet(s.compactedKey())}
	for _, g := range first {
		reads = append(reads, clientv3.OpGet(s.versionKey(g)))
	}
	resp, err := s.cli.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return 0, 0, 0, nil, fmt.Errorf("storage: commit: reading the guards: %w", err)
	}
	if latest, revMod, err = value(resp.Responses[0]); err != nil {
		return 0, 0, 0, nil, err
	}
	if compacted, _, err = value(resp.Responses[1]); err != nil {
		return 0, 0, 0, nil, err
	}
	responses := resp.Responses[2:]
	seen = make(map[string]authz.Revision, len(keys))
	for at := 0; ; {
		for i, g := range keys[at : at+len(responses)] {
			if seen[g], _, err = value(responses[i]); err != nil {
				return 0, 0, 0, nil, err
			}
		}
		if at += len(responses); at == len(keys) {
			return latest, revMod, compacted, seen, nil
		}
		reads = reads[:0]
		for _, g := range keys[at:min(at+per, len(keys))] {
			reads = append(reads, clientv3.OpGet(s.versionKey(g), clientv3.WithRev(resp.Header.Revision)))
		}
		more, err := s.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return 0, 0, 0, nil, fmt.Errorf("storage: commit: reading the guards: %w", err)
		}
		responses = more.Responses
	}
}

// conflict returns the first guard of w touched after w.Planned, by the
// store or by a write earlier in the same transaction, or "".
func conflict(w authz.Write, seen map[string]authz.Revision, touched map[string]bool, compacted authz.Revision) string {
	if w.Planned < compacted {
		return fmt.Sprintf("(planned at revision %d, before the log's horizon %d)", w.Planned, compacted)
	}
	for _, g := range w.Guards {
		if seen[g] > w.Planned || touched[g] {
			return g
		}
	}
	return ""
}

// value decodes the revision held by a Get's key, with its mod revision; an
// absent key is revision 0 at mod revision 0.
func value(r *etcdserverpb.ResponseOp) (authz.Revision, int64, error) {
	kvs := r.GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return 0, 0, nil
	}
	rev, err := decodeRev(kvs[0].Value)
	if err != nil {
		return 0, 0, fmt.Errorf("storage: key %q: %w", kvs[0].Key, err)
	}
	return rev, kvs[0].ModRevision, nil
}

// LogStart implements storage.Backend.
func (s *Store) LogStart(ctx context.Context) (authz.Revision, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	resp, err := s.cli.Get(ctx, s.compactedKey())
	if err != nil {
		return 0, fmt.Errorf("storage: log start: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return decodeRev(resp.Kvs[0].Value)
}

// Revision implements storage.Backend.
func (s *Store) Revision(ctx context.Context) (authz.Revision, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	resp, err := s.cli.Get(ctx, s.revKey())
	if err != nil {
		return 0, fmt.Errorf("storage: revision: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return decodeRev(resp.Kvs[0].Value)
}

// pageSize is how many keys one range read returns. etcd counts every key of
// the range left to read at each page, so a page's cost grows with what
// remains: large pages keep a million grants to a few dozen reads (about
// 10 MB each).
const pageSize = 100_000

// scan sends every key under prefix, at etcd revision at, to fn, a page at
// a time.
func (s *Store) scan(ctx context.Context, prefix string, at int64, fn func(k, v []byte) error) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	type page struct {
		resp *clientv3.GetResponse
		err  error
	}
	fetch := func(from string) <-chan page {
		c := make(chan page, 1)
		go func() {
			resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithRev(at), clientv3.WithLimit(pageSize))
			c <- page{resp, err}
		}()
		return c
	}
	// The next page is asked for as soon as a page arrives, so that etcd
	// reads it while this one is decoded.
	pending := fetch(prefix)
	for {
		p := <-pending
		if p.err != nil {
			return p.err
		}
		kvs := p.resp.Kvs
		more := p.resp.More && len(kvs) > 0
		if more {
			pending = fetch(string(kvs[len(kvs)-1].Key) + "\x00")
		}
		for _, kv := range kvs {
			if err := fn(kv.Key, kv.Value); err != nil {
				if more {
					<-pending
				}
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

// Load implements authz.Backend: every entity at one etcd revision.
func (s *Store) Load(ctx context.Context, sink authz.Sink) (authz.Revision, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	resp, err := s.cli.Get(ctx, s.revKey())
	if err != nil {
		return 0, fmt.Errorf("storage: load: %w", err)
	}
	at := resp.Header.Revision
	var rev authz.Revision
	if len(resp.Kvs) > 0 {
		if rev, err = decodeRev(resp.Kvs[0].Value); err != nil {
			return 0, err
		}
	}
	for _, kind := range storage.Kinds {
		prefix := s.entityPrefix(kind)
		err := s.scan(ctx, prefix, at, func(k, v []byte) error {
			if rev == 0 {
				// Entities without a revision are what an import that
				// stopped part way left, not a store.
				return fmt.Errorf("%s holds entities but no revision: an import (usher migrate) that did not finish left them; "+
					"remove them (etcdctl del --prefix %s) and migrate again", s.prefix, s.prefix)
			}
			return storage.Decode(kind, k[len(prefix):], v, sink)
		})
		if err != nil {
			return 0, fmt.Errorf("storage: load %s: %w", kind, err)
		}
	}
	return rev, nil
}

// Changes implements authz.Backend.
func (s *Store) Changes(ctx context.Context, after authz.Revision, limit int) ([]authz.ChangeSet, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: changes: limit must be positive, got %d", limit)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if after == ^authz.Revision(0) {
		// Nothing comes after it; the log's key after it would wrap to
		// the first.
		return nil, nil
	}
	css, _, err := s.changes(ctx, after, limit, 0)
	return css, err
}

// ChangeCounts implements authz.Backend: the changes counted in the
// change sets' values, undecoded.
func (s *Store) ChangeCounts(ctx context.Context, after authz.Revision, limit int) ([]int, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("storage: change counts: limit must be positive, got %d", limit)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if after == ^authz.Revision(0) {
		return nil, nil
	}
	kvs, _, err := s.logValues(ctx, after, limit, 0)
	if err != nil {
		return nil, err
	}
	var counts []int
	for _, kv := range kvs {
		n, err := storage.ChangeSetLen(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("storage: change set %q: %w", kv.Key, err)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// CommitTime implements authz.Backend: the time read from the change
// set's value, its changes left undecoded.
func (s *Store) CommitTime(ctx context.Context, rev authz.Revision) (time.Time, bool, error) {
	if err := s.check(); err != nil {
		return time.Time{}, false, err
	}
	resp, err := s.cli.Get(ctx, s.logKey(rev))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("storage: commit time of %d: %w", rev, err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, false, nil
	}
	t, err := storage.ChangeSetTime(resp.Kvs[0].Value)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("storage: change set %q: %w", resp.Kvs[0].Key, err)
	}
	return t, true, nil
}

// changes reads up to limit change sets after after, at etcd revision at (0:
// the latest), and returns the etcd revision it read at.
func (s *Store) changes(ctx context.Context, after authz.Revision, limit int, at int64) ([]authz.ChangeSet, int64, error) {
	kvs, read, err := s.logValues(ctx, after, limit, at)
	if err != nil {
		return nil, 0, err
	}
	var out []authz.ChangeSet
	for _, kv := range kvs {
		cs, err := storage.DecodeChangeSet(kv.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: change set %q: %w", kv.Key, err)
		}
		out = append(out, cs)
	}
	return out, read, nil
}

// logValues reads the values of up to limit change sets after after, at
// etcd revision at (0: the latest), in the transaction that reads where the
// log begins, and returns the etcd revision it read at.
func (s *Store) logValues(ctx context.Context, after authz.Revision, limit int, at int64) ([]*mvccpb.KeyValue, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.logPrefix())), clientv3.WithLimit(int64(limit))}
	if at > 0 {
		opts = append(opts, clientv3.WithRev(at))
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.compactedKey()),
		clientv3.OpGet(s.logKey(after+1), opts...),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("storage: changes: %w", err)
	}
	compacted, _, err := value(resp.Responses[0])
	if err != nil {
		return nil, 0, err
	}
	if after < compacted {
		return nil, 0, fmt.Errorf("storage: changes after %d: %w (it begins after revision %d)", after, authz.ErrCompacted, compacted)
	}
	return resp.Responses[1].GetResponseRange().GetKvs(), resp.Header.Revision, nil
}

// Watch implements authz.Backend: what the log holds after after, then
// what is committed, from an etcd watch on the log that starts where the
// read left off, so that nothing falls between them.
func (s *Store) Watch(ctx context.Context, after authz.Revision) iter.Seq2[authz.ChangeSet, error] {
	return func(yield func(authz.ChangeSet, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		for {
			// Catch up from the log, then watch from the etcd revision
			// the last read saw.
			var at int64
			for {
				batch, rev, err := s.changes(ctx, after, 256, 0)
				if err != nil {
					if ctx.Err() != nil {
						s.ended(yield)
						return
					}
					yield(authz.ChangeSet{}, err)
					return
				}
				at = rev
				for _, cs := range batch {
					if !yield(cs, nil) {
						return
					}
					after = cs.Revision
				}
				if len(batch) < 256 {
					break
				}
			}
			wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
			ch := s.cli.Watch(wctx, s.logPrefix(), clientv3.WithPrefix(), clientv3.WithRev(at+1), clientv3.WithProgressNotify())
		watching:
			for resp := range ch {
				if err := resp.Err(); err != nil {
					// A compacted etcd history, a lost leader: read the
					// log again from what was delivered.
					break watching
				}
				var sets []authz.ChangeSet
				for _, ev := range resp.Events {
					if ev.Type != clientv3.EventTypePut {
						continue // compaction deletes old entries
					}
					cs, err := storage.DecodeChangeSet(ev.Kv.Value)
					if err != nil {
						stop()
						yield(authz.ChangeSet{}, fmt.Errorf("storage: change set %q: %w", ev.Kv.Key, err))
						return
					}
					sets = append(sets, cs)
				}
				sort.Slice(sets, func(i, j int) bool { return sets[i].Revision < sets[j].Revision })
				for _, cs := range sets {
					if cs.Revision <= after {
						continue
					}
					if cs.Revision != after+1 {
						break watching // a gap: read the log again
					}
					if !yield(cs, nil) {
						stop()
						return
					}
					after = cs.Revision
				}
			}
			stop()
			if ctx.Err() != nil {
				s.ended(yield)
				return
			}
			select {
			case <-ctx.Done():
				s.ended(yield)
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// ended reports a watch that the store's Close ended, and says nothing of
// one its caller's context ended.
func (s *Store) ended(yield func(authz.ChangeSet, error) bool) {
	select {
	case <-s.done:
		yield(authz.ChangeSet{}, storage.ErrClosed)
	default:
	}
}

// Compact implements storage.Backend: it drops the log up to before, a page
// at a time, then the guard keys no plan can read any longer, and moves
// the horizon.
func (s *Store) Compact(ctx context.Context, before authz.Revision) error {
	if err := s.check(); err != nil {
		return err
	}
	latest, err := s.Revision(ctx)
	if err != nil {
		return err
	}
	before = min(before, latest)
	// The horizon moves first: a plan older than it conflicts from now on,
	// so dropping what it could have read is safe. It only ever moves
	// forward: a compaction that another one, to a later revision,
	// overtook leaves the horizon where that one put it.
	for {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.compactedKey())).Commit()
		if err != nil {
			return fmt.Errorf("storage: compact: %w", err)
		}
		compacted, mod, err := value(resp.Responses[0])
		if err != nil {
			return err
		}
		if before <= compacted {
			return nil
		}
		tr, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(s.compactedKey()), "=", mod)).
			Then(clientv3.OpPut(s.compactedKey(), encodeRev(before))).
			Commit()
		if err != nil {
			return fmt.Errorf("storage: compact: %w", err)
		}
		if tr.Succeeded {
			break
		}
	}
	if _, err := s.cli.Delete(ctx, s.logPrefix(), clientv3.WithRange(s.logKey(before+1))); err != nil {
		return fmt.Errorf("storage: compact: %w", err)
	}
	var stale []string
	err = s.scan(ctx, s.key("v/"), 0, func(k, v []byte) error {
		if r, err := decodeRev(v); err == nil && r <= before {
			stale = append(stale, string(k))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: compact: %w", err)
	}
	// Only keys untouched since the scan go; a few per transaction, each
	// compared with what the scan saw.
	per := max(1, s.opts.MaxTxnOps/2)
	for len(stale) > 0 {
		n := min(len(stale), per)
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, k := range stale[:n] {
			cmps = append(cmps, clientv3.Compare(clientv3.Value(k), "<", encodeRev(before+1)))
			ops = append(ops, clientv3.OpDelete(k))
		}
		if _, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("storage: compact: %w", err)
		}
		stale = stale[n:]
	}
	return nil
}

// maybeCompact starts a compaction in the background once the log holds
// twice the change sets the store retains, looking each time a batch of
// commits reaches or passes a multiple of 1,024 revisions: a batch may
// pass one without ending on it, and group commits of two at a time after
// one alone never end on one.
func (s *Store) maybeCompact(results []authz.Committed) {
	if s.opts.Retain == 0 {
		return
	}
	var first, last authz.Revision
	for _, r := range results {
		if r.Revision != 0 && (first == 0 || r.Revision < first) {
			first = r.Revision
		}
		last = max(last, r.Revision)
	}
	if last == 0 || (first-1)/1024 == last/1024 || last-last/2 <= s.opts.Retain { // last <= 2*Retain, which cannot overflow
		return
	}
	s.mu.Lock()
	if s.compacting || s.closed {
		s.mu.Unlock()
		return
	}
	s.compacting = true
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			s.compacting = false
			s.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = s.Compact(ctx, last-s.opts.Retain)
	}()
}

// Close implements authz.Backend: it ends every watch. It does not close
// the client.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	return nil
}

// ErrNotEmpty is Import's refusal of a prefix that holds data, or that
// another writer wrote under during the import.
var ErrNotEmpty = errors.New("the prefix already holds Usher data")

// Import writes snap under the prefix as revision snap.Revision, with the log
// beginning after it: for `usher migrate`. The prefix must be empty. The
// entities take several transactions; every one of them, and the last,
// which sets the revision, commits only while the revision key is absent,
// so that a server writing under the prefix meanwhile fails the import
// rather than mixing its writes into it.
func (s *Store) Import(ctx context.Context, snap authz.Snapshot) error {
	if err := s.check(); err != nil {
		return err
	}
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("storage: import: %w", err)
	}
	if resp.Count > 0 {
		return fmt.Errorf("storage: import into %s: %w (%d keys)", s.prefix, ErrNotEmpty, resp.Count)
	}
	untouched := clientv3.Compare(clientv3.CreateRevision(s.revKey()), "=", 0)
	commit := func(ops ...clientv3.Op) error {
		resp, err := s.cli.Txn(ctx).If(untouched).Then(ops...).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("%w: another writer committed under %s during the import", ErrNotEmpty, s.prefix)
		}
		return nil
	}
	// Each transaction holds as many entities as fit MaxTxnOps and
	// MaxTxnBytes, beside the compare.
	var ops []clientv3.Op
	base := txnBase(s).bytes
	size := base
	for _, c := range storage.Puts(snap) {
		more, err := s.entityOps(authz.ChangeSet{Changes: []authz.Change{c}})
		if err != nil {
			return fmt.Errorf("storage: import: %w", err)
		}
		n := 0
		for _, op := range more {
			n += len(op.KeyBytes()) + len(op.ValueBytes()) + opFraming
		}
		if len(ops) > 0 && (len(ops)+len(more) > s.opts.MaxTxnOps || size+n > s.opts.MaxTxnBytes) {
			if err := commit(ops...); err != nil {
				return fmt.Errorf("storage: import: %w", err)
			}
			ops, size = ops[:0], base
		}
		ops, size = append(ops, more...), size+n
	}
	if len(ops) > 0 {
		if err := commit(ops...); err != nil {
			return fmt.Errorf("storage: import: %w", err)
		}
	}
	err = commit(
		clientv3.OpPut(s.compactedKey(), encodeRev(snap.Revision)),
		clientv3.OpPut(s.revKey(), encodeRev(snap.Revision)),
	)
	if err != nil {
		return fmt.Errorf("storage: import: %w", err)
	}
	return nil
}
