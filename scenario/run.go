package scenario

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/storage/memory"
)

// Result is the outcome of one scenario file: each expectation passed or
// failed, and each failure as a "file:line: what" line.
type Result struct {
	Passed, Failed int
	// NotRun counts the expectations after a failed setup step.
	NotRun   int
	Failures []string
	// Steps are what became of every step, in order.
	Steps []Outcome
}

// Status is what became of a step.
type Status int

// The statuses of a step.
const (
	Passed Status = iota
	Failed
	// NotRun: a setup step before it failed, so the scenario stopped.
	NotRun
)

func (s Status) String() string {
	return [...]string{"passed", "failed", "not run"}[s]
}

// Outcome is what became of one step.
type Outcome struct {
	Line int
	// Name is the step's quote, or what it does.
	Name string
	// What says what the step does, e.g. "check user:a join-call on
	// account:acme".
	What string
	// Expectation is false for a setup step.
	Expectation bool
	Status      Status
	// Message says why the step failed or was not run.
	Message string
}

// Select keeps the expectations keep selects and every setup step (a
// failed one explains the expectations not run after it), recounting.
func (r Result) Select(keep func(Outcome) bool) Result {
	var out Result
	for _, o := range r.Steps {
		if !o.Expectation || keep(o) {
			out.Steps = append(out.Steps, o)
		}
	}
	out.count()
	return out
}

// count derives the counts and failure lines from Steps.
func (r *Result) count() {
	r.Passed, r.Failed, r.NotRun, r.Failures = 0, 0, 0, nil
	for _, o := range r.Steps {
		switch {
		case o.Status == Failed:
			r.Failed++
			r.Failures = append(r.Failures, o.Message)
		case !o.Expectation:
		case o.Status == Passed:
			r.Passed++
		case o.Status == NotRun:
			r.NotRun++
		}
	}
}

// codeNames spell authz's codes as gRPC does, as scenario files name them.
var codeNames = map[authz.Code]string{
	authz.Invalid:            "INVALID_ARGUMENT",
	authz.NotFound:           "NOT_FOUND",
	authz.FailedPrecondition: "FAILED_PRECONDITION",
	authz.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	authz.PermissionDenied:   "PERMISSION_DENIED",
	authz.Unavailable:        "UNAVAILABLE",
	authz.Aborted:            "ABORTED",
}

var reasonNames = map[authz.Reason]string{
	authz.ReasonGranted:         "GRANTED",
	authz.ReasonBlocked:         "BLOCKED",
	authz.ReasonNoGrant:         "NO_GRANT",
	authz.ReasonUnknownResource: "UNKNOWN_RESOURCE",
}

// epoch is when a scenario's clock starts; advance steps move it.
var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// lastInstant is the last instant whose Unix nanoseconds fit an int64, in
// 2262: the engine reads its clock, and keeps expiries, so.
var lastInstant = time.Unix(0, math.MaxInt64).UTC()

// Run replays f against a fresh in-memory engine with f's policy applied,
// on a clock of its own. It fails as a whole only when the policy cannot be
// loaded or applied. A setup step that fails stops the scenario there: the
// expectations after it would only repeat its failure, so they are counted
// as not run.
func Run(f *File) (Result, error) {
	clock := authz.NewManualClock(epoch)
	engine, err := newEngine(f, clock)
	if err != nil {
		return Result{}, err
	}
	defer engine.Close()
	sessions := admission.New(engine, admission.Options{})
	defer sessions.Close()
	r := &runner{file: f, engine: engine, sessions: sessions, joined: map[Presence]string{},
		ctx: context.Background(), clock: clock, blocks: map[string]string{}}
	stopped := 0 // the line of the setup step that failed
	for _, s := range f.Steps {
		o := Outcome{Line: s.Line, Name: s.Name(), What: s.Describe(), Expectation: s.Expectation()}
		if stopped > 0 {
			o.Status, o.Message = NotRun, fmt.Sprintf("%s:%d: not run: the setup step at line %d failed", f.Path, s.Line, stopped)
			r.res.Steps = append(r.res.Steps, o)
			continue
		}
		r.failure = ""
		goOn := r.step(s)
		if r.failure != "" {
			o.Status, o.Message = Failed, r.failure
		}
		r.res.Steps = append(r.res.Steps, o)
		if !goOn {
			stopped = s.Line
		}
	}
	r.res.count()
	return r.res, nil
}

// LoadPolicy resolves a scenario's policy, a file next to the scenario or
// a shipped policy, and validates it as `usher policy validate` does.
func LoadPolicy(f *File) (authz.Policy, error) {
	name := f.Policy
	if candidate := filepath.Join(filepath.Dir(f.Path), name); fileExists(candidate) {
		name = candidate
	}
	doc, _, err := policy.LoadDocument(name)
	if err == nil {
		err = policy.Validate(doc).Err()
	}
	if err != nil {
		return authz.Policy{}, fmt.Errorf("%s: policy %s: %w", f.Path, f.Policy, err)
	}
	return policy.ToAuthz(doc.Policy), nil
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

func newEngine(f *File, clock authz.Clock) (*authz.Engine, error) {
	p, err := LoadPolicy(f)
	if err != nil {
		return nil, err
	}
	engine, err := NewMemoryEngine(clock)
	if err != nil {
		return nil, err
	}
	if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "usher policy test"}, p, authz.ApplyOptions{}); err != nil {
		engine.Close()
		return nil, fmt.Errorf("%s: policy %s: %w", f.Path, f.Policy, err)
	}
	return engine, nil
}

// NewMemoryEngine returns an engine on an empty in-memory backend, reading
// time from clock (nil for the system's).
func NewMemoryEngine(clock authz.Clock) (*authz.Engine, error) {
	return authz.Start(context.Background(), memory.New(), authz.Options{Clock: clock})
}

type runner struct {
	file     *File
	engine   *authz.Engine
	sessions *admission.Manager
	joined   map[Presence]string // a subject in a call -> its session
	ctx      context.Context
	clock    *authz.ManualClock
	blocks   map[string]string // a block's name in the scenario -> its ID
	res      Result
	failure  string // the current step's failure line, if it failed
}

func (r *runner) fail(s Step, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if s.Quote != "" {
		msg = fmt.Sprintf("%q: %s", s.Quote, msg)
	}
	r.failure = fmt.Sprintf("%s:%d: %s", r.file.Path, s.Line, msg)
}

// step runs one step and reports whether the scenario may go on: false
// after a setup step that failed.
func (r *runner) step(s Step) bool {
	switch {
	case s.Check != nil:
		r.check(s)
	case s.Permissions != nil:
		r.permissions(s)
	case s.Roles != nil:
		r.roles(s)
	case s.Join != nil:
		return r.join(s)
	case s.Leave != nil:
		id := r.joined[*s.Leave]
		if id == "" {
			r.fail(s, "leave: %s did not join %s earlier in the scenario", s.Leave.Subject, s.Leave.Resource)
			return false
		}
		delete(r.joined, *s.Leave)
		if err := r.sessions.Leave(r.ctx, id); err != nil {
			r.fail(s, "leave %s: %v", s.Leave.Resource, err)
			return false
		}
	case s.Advance != "":
		d, err := time.ParseDuration(s.Advance)
		if err != nil || d < 0 {
			r.fail(s, "advance %q: not a duration ahead, such as 90m", s.Advance)
			return false
		}
		// Past it, the clock's reading in nanoseconds wraps around, and
		// grants that ran out long ago would count again.
		if r.clock.Now().Add(d).After(lastInstant) {
			r.fail(s, "advance %q: the clock would pass %s, the last instant Usher keeps time to", s.Advance, lastInstant.Format(time.RFC3339Nano))
			return false
		}
		r.clock.Advance(d)
	default:
		what, err := r.write(s)
		return r.wrote(s, what, err)
	}
	return true
}

// expiry is the instant a step's expires_in names on the scenario's clock.
func (r *runner) expiry(in string) (time.Time, error) {
	if in == "" {
		return time.Time{}, nil
	}
	d, err := time.ParseDuration(in)
	if err != nil {
		return time.Time{}, fmt.Errorf("expires_in %q: %w", in, err)
	}
	return r.clock.Now().Add(d), nil
}

// write performs a write step and describes it.
func (r *runner) write(s Step) (string, error) {
	e, ctx := r.engine, r.ctx
	by := func(actor string) authz.Author { return authz.Author{Caller: "usher policy test", Actor: actor} }
	switch {
	case s.Register != nil:
		w := s.Register
		what := s.Describe()
		if err := names(w.Actor, [2]string{"resource", w.Name}, [2]string{"resource?", w.Parent}); err != nil {
			return what, err
		}
		_, err := e.PutResource(ctx, by(w.Actor), authz.Resource{Name: w.Name, Parent: w.Parent})
		return what, err
	case s.Delete != nil:
		w := s.Delete
		what := s.Describe()
		if err := names(w.Actor, [2]string{"resource", w.Name}); err != nil {
			return what, err
		}
		_, err := e.DeleteResource(ctx, by(w.Actor), w.Name)
		return what, err
	case s.Grant != nil, s.Revoke != nil:
		w, op := s.Grant, e.Grant
		if w == nil {
			w, op = s.Revoke, e.Revoke
		}
		what := s.Describe()
		if err := names(w.Actor, [2]string{"subject", w.Subject}, [2]string{"role", w.Role}, [2]string{"resource", w.Resource}); err != nil {
			return what, err
		}
		expires, err := r.expiry(w.ExpiresIn)
		if err != nil {
			return what, err
		}
		_, err = op(ctx, by(w.Actor), authz.Grant{Subject: w.Subject, Role: w.Role, Resource: w.Resource, Expires: expires})
		return what, err
	case s.Block != nil:
		w := s.Block
		what := s.Describe()
		if err := names(w.Actor, [2]string{"subject", w.Subject}, [2]string{"resource", w.Resource}); err != nil {
			return what, err
		}
		expires, err := r.expiry(w.ExpiresIn)
		if err != nil {
			return what, err
		}
		_, id, err := e.Block(ctx, by(w.Actor), authz.Block{Subject: w.Subject, Resource: w.Resource, Permissions: w.Permissions,
			Reason: w.Reason, Expires: expires})
		if err == nil && w.ID != "" {
			r.blocks[w.ID] = id
		}
		return what, err
	case s.Unblock != nil:
		w := s.Unblock
		what := s.Describe()
		if err := names(w.Actor, [2]string{"subject", w.Subject}, [2]string{"resource", w.Resource}); err != nil {
			return what, err
		}
		id := ""
		if w.ID != "" {
			if id = r.blocks[w.ID]; id == "" {
				return what, fmt.Errorf("no block named %q was made earlier in the scenario", w.ID)
			}
		}
		_, err := e.Unblock(ctx, by(w.Actor), w.Subject, w.Resource, id)
		return what, err
	case s.PutRole != nil:
		w := s.PutRole
		what := s.Describe()
		if err := names(w.Actor, [2]string{"role", w.Name}, [2]string{"resource", w.Scope}); err != nil {
			return what, err
		}
		_, err := e.PutRole(ctx, by(w.Actor), authz.Role{Name: w.Name, Scope: w.Scope, Permissions: w.Permissions,
			AssignableRoles: w.AssignableRoles, BindableOn: w.BindableOn, MaxHolders: w.MaxHolders})
		return what, err
	case s.DeleteRole != nil:
		w := s.DeleteRole
		what := s.Describe()
		if err := names(w.Actor, [2]string{"role", w.Name}, [2]string{"resource", w.Scope}); err != nil {
			return what, err
		}
		_, err := e.DeleteRole(ctx, by(w.Actor), w.Scope, w.Name)
		return what, err
	case s.PutQuota != nil:
		w := s.PutQuota
		what := s.Describe()
		if err := names(w.Actor, [2]string{"resource", w.Scope}, [2]string{"subject?", w.Subject}); err != nil {
			return what, err
		}
		_, err := e.PutQuota(ctx, by(w.Actor), authz.Quota{Scope: w.Scope, ResourceType: w.ResourceType, Subject: w.Subject, Limit: w.Limit})
		return what, err
	case s.Admit != nil:
		w := s.Admit
		what := s.Describe()
		if err := names(w.Actor, [2]string{"subject", w.Subject}, [2]string{"resource", w.Resource}); err != nil {
			return what, err
		}
		expires, err := r.expiry(w.ExpiresIn)
		if err != nil {
			return what, err
		}
		_, err = r.sessions.Admit(ctx, by(w.Actor), w.Resource, w.Subject, expires)
		return what, err
	case s.GoLive != nil:
		w := s.GoLive
		what := s.Describe()
		if err := names(w.Actor, [2]string{"resource", w.Resource}); err != nil {
			return what, err
		}
		_, err := e.GoLive(ctx, by(w.Actor), w.Resource, true)
		return what, err
	case s.DeleteQuota != nil:
		w := s.DeleteQuota
		what := s.Describe()
		if err := names(w.Actor, [2]string{"resource", w.Scope}, [2]string{"subject?", w.Subject}); err != nil {
			return what, err
		}
		_, err := e.DeleteQuota(ctx, by(w.Actor), authz.Quota{Scope: w.Scope, ResourceType: w.ResourceType, Subject: w.Subject})
		return what, err
	}
	return "", fmt.Errorf("no action")
}

// wrote judges a write: setup must succeed; with refused, it must be refused
// with that code (and, with rule, by that rule). It reports false for a
// setup step that failed.
func (r *runner) wrote(s Step, what string, err error) bool {
	if s.Refused == "" {
		if err != nil {
			r.fail(s, "%s: %v", what, err)
			return false
		}
		return true
	}
	if err == nil {
		r.fail(s, "%s was allowed, want it refused with %s", what, s.Refused)
		return true
	}
	if got := codeNames[authz.CodeOf(err)]; got != s.Refused {
		r.fail(s, "%s was refused with %s (%v), want %s", what, or(got, "an unexpected error"), err, s.Refused)
		return true
	}
	if s.Rule != "" {
		var e *authz.Error
		if !errors.As(err, &e) || e.Rule != s.Rule {
			r.fail(s, "%s was refused (%v), but not by the rule %q", what, err, s.Rule)
			return true
		}
	}
	return true
}

// join asks admission; without an outcome the step is setup and must be
// admitted.
func (r *runner) join(s Step) bool {
	j := s.Join
	what := s.Describe()
	res, err := r.sessions.Join(r.ctx, "", j.Subject, j.Resource, 0)
	if err != nil {
		r.fail(s, "%s: %v", what, err)
		return s.Outcome != ""
	}
	if res.Outcome == admission.Admitted {
		r.joined[*j] = res.Session
	}
	want := or(s.Outcome, admission.Admitted.String())
	if got := res.Outcome.String(); got != want {
		r.fail(s, "%s: %s (%s), want %s", what, got, res.Reason, want)
		return s.Outcome != ""
	}
	return true
}

func (r *runner) check(s Step) {
	c := s.Check
	what := s.Describe()
	if s.Allowed == nil {
		r.fail(s, "%s: the step says nothing about allowed", what)
		return
	}
	if err := names("", [2]string{"subject", c.Subject}, [2]string{"resource", c.Resource}); err != nil {
		r.fail(s, "%s: %v", what, err)
		return
	}
	d, _, err := r.engine.Index().Check(authz.Query{Subject: c.Subject, Permission: c.Permission, Resource: c.Resource})
	if err != nil {
		r.fail(s, "%s: %v", what, err)
		return
	}
	got := fmt.Sprintf("allowed %v (%s", d.Allowed, reasonNames[d.Reason])
	if d.Role != "" {
		got += " by " + d.Role
	}
	if d.Scope != "" {
		got += " at " + d.Scope
	}
	got += ")"
	switch {
	case d.Allowed != *s.Allowed:
		r.fail(s, "%s: %s, want allowed %v", what, got, *s.Allowed)
	case s.Reason != "" && reasonNames[d.Reason] != s.Reason:
		r.fail(s, "%s: %s, want reason %s", what, got, s.Reason)
	case s.Role != "" && d.Role != s.Role:
		r.fail(s, "%s: %s, want role %s", what, got, s.Role)
	case s.Scope != "" && d.Scope != s.Scope:
		r.fail(s, "%s: %s, want scope %s", what, got, s.Scope)
	}
}

func (r *runner) permissions(s Step) {
	p := s.Permissions
	what := s.Describe()
	got, known, _ := r.engine.Index().ListPermissions(p.Subject, p.Resource, false)
	if !known {
		r.fail(s, "%s: the resource is not registered", what)
		return
	}
	r.sameSet(s, what, got, s.Exactly)
}

func (r *runner) roles(s Step) {
	q := s.Roles
	what := s.Describe()
	list, _, err := r.engine.Index().ListRoles(q.Resource)
	if q.AssignableBy != "" {
		list, _, err = r.engine.Index().AssignableRoles(q.Resource, q.AssignableBy)
	}
	if err != nil {
		r.fail(s, "%s: %v", what, err)
		return
	}
	var got []string
	for _, role := range list {
		got = append(got, role.Name)
	}
	r.sameSet(s, what, got, s.Exactly)
}

func (r *runner) sameSet(s Step, what string, got, want []string) {
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if slices.Equal(got, want) {
		return
	}
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	r.fail(s, "%s: missing %v, unexpected %v", what, missing, extra)
}

// names checks the shape of the names a step uses, as the server's edge
// does; a kind ending in "?" may be empty.
func names(actor string, pairs ...[2]string) error {
	if actor != "" {
		if err := authz.ValidateSubject("actor", actor); err != nil {
			return err
		}
	}
	for _, p := range pairs {
		kind, value := strings.TrimSuffix(p[0], "?"), p[1]
		if value == "" && kind != p[0] {
			continue
		}
		var err error
		switch kind {
		case "resource":
			err = authz.ValidateResource(kind, value)
		case "subject":
			err = authz.ValidateSubject(kind, value)
		case "role":
			err = authz.ValidateRoleName(kind, value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
