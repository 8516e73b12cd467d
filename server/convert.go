package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-authz/usher/authz"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
	"github.com/usher-authz/usher/policy"
)

func fromTimestamp(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func toTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// reasons are the wire's reasons, by authz.Reason.
var reasons = [...]usherv1.Reason{
	authz.ReasonGranted:         usherv1.Reason_REASON_GRANTED,
	authz.ReasonBlocked:         usherv1.Reason_REASON_BLOCKED,
	authz.ReasonNoGrant:         usherv1.Reason_REASON_NO_GRANT,
	authz.ReasonUnknownResource: usherv1.Reason_REASON_UNKNOWN_RESOURCE,
}

func toDecision(d authz.Decision) *usherv1.Decision {
	out := &usherv1.Decision{}
	setDecision(out, d)
	return out
}

// setDecision fills an empty decision with d.
func setDecision(out *usherv1.Decision, d authz.Decision) {
	out.Allowed = d.Allowed
	if int(d.Reason) < len(reasons) {
		out.Reason = reasons[d.Reason]
	}
	out.Role, out.Scope, out.BlockReason, out.BlockId = d.Role, d.Scope, d.BlockReason, d.BlockID
}

func toGrant(g authz.Grant) *usherv1.Grant {
	return &usherv1.Grant{Subject: g.Subject, Role: g.Role, Resource: g.Resource, ExpireTime: toTimestamp(g.Expires)}
}

func toChangeRecord(cs authz.ChangeSet) *usherv1.ChangeRecord {
	return &usherv1.ChangeRecord{Revision: uint64(cs.Revision), Time: toTimestamp(cs.Time), Caller: cs.Caller, Actor: cs.Actor,
		Changes: toChanges(cs.Changes), Continued: cs.Continued}
}

// toChanges converts changes: the policy package converts what a policy
// holds, and grants and blocks, which no policy holds, are converted here.
func toChanges(cs []authz.Change) []*usherv1.Change {
	out := policy.FromAuthzChanges(cs)
	for i, c := range cs {
		switch {
		case c.Grant != nil:
			out[i].Entity = &usherv1.Change_Grant{Grant: toGrant(*c.Grant)}
		case c.Block != nil:
			out[i].Entity = &usherv1.Change_Block{Block: toBlock(*c.Block)}
		}
	}
	return out
}

func toBlock(b authz.Block) *usherv1.Block {
	return &usherv1.Block{Subject: b.Subject, Resource: b.Resource, Id: b.ID, Permissions: b.Permissions,
		ExpireTime: toTimestamp(b.Expires), Reason: b.Reason}
}

// FromPolicy converts a policy message to the engine's form.
func FromPolicy(p *usherv1.Policy) authz.Policy { return policy.ToAuthz(p) }

// ValidatePolicy checks the shape of every name in a policy, naming the
// field path of the first malformed one.
func ValidatePolicy(p authz.Policy) error {
	var v validator
	v.policy(p, nil)
	return v.err
}
