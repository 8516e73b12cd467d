package server

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/usher-authz/usher/authz"
)

// Limits on what one request may carry, so that no caller can make the
// server hold unbounded memory or spend unbounded time on one call, and no
// stored text is too long to echo. Each refusal names the field and states
// the limit.
//
//	what                                  limit        refused with
//	one request message, encoded          4 MiB        RESOURCE_EXHAUSTED, by grpc-go: "grpc: received
//	                                                   message larger than max (N vs. 4194304)"
//	checks in one CheckBatch              1 to 1,000   INVALID_ARGUMENT, past 1,000 before decoding
//	fields of an Envoy CheckRequest       10,000       INVALID_ARGUMENT, before decoding (MaxEnvoyFields)
//	a compressed request (grpc-encoding)  none         UNIMPLEMENTED, unread, on every service
//	a server reflection request           64 KiB       INVALID_ARGUMENT, before decoding (MaxReflectionRequest)
//	resource type, subject kind           32 bytes     INVALID_ARGUMENT (authz.MaxTypeLen)
//	resource id, subject id               256 chars    INVALID_ARGUMENT (authz.MaxIDLen)
//	permission name, role name            128 bytes    INVALID_ARGUMENT (authz.MaxPermissionLen)
//	page_size of a list call              0 to 1,000   INVALID_ARGUMENT (authz.MaxPageSize)
//	page_token                            4,096 bytes  INVALID_ARGUMENT
//	permissions declared by a policy      10,000       INVALID_ARGUMENT
//	resources listed by a policy          100,000      INVALID_ARGUMENT
//	roles defined by a policy             10,000       INVALID_ARGUMENT
//	creator roles of a policy             1,000        INVALID_ARGUMENT
//	quotas of a policy                    10,000       INVALID_ARGUMENT
//	parents of one permission             100          INVALID_ARGUMENT, past it before decoding (ApplyPolicy)
//	permissions of one role               1,000        INVALID_ARGUMENT, past it before decoding (PutRole, ApplyPolicy)
//	assignable_roles of one role          1,000        INVALID_ARGUMENT, past it before decoding (PutRole, ApplyPolicy)
//	bindable_on of one role               100          INVALID_ARGUMENT, past it before decoding (PutRole, ApplyPolicy)
//	permissions of one block              1,000        INVALID_ARGUMENT, past it before decoding (Block)
//	uncounted_roles, exclusive_roles,     64 each      INVALID_ARGUMENT (authz.ValidateAdmission); the three
//	  exclusive_permissions of an                      lists past it before decoding (PutAdmission, ApplyPolicy)
//	  admission rule; permissions its
//	  LiveKit room_admin, room_record list
//	description of a permission or role   1,024 bytes  INVALID_ARGUMENT; and, as for the two below, no
//	                                                   control character but tab, CR and LF, and no
//	                                                   bidirectional embedding, override or isolate
//	reason of a block                     1,024 bytes  INVALID_ARGUMENT
//	note of a knock                       256 bytes    INVALID_ARGUMENT (admission.MaxNoteLen)
//	caller filter of Watch, ListChanges   128 bytes    INVALID_ARGUMENT
//	Watch streams open at once            1,024        RESOURCE_EXHAUSTED (WatchLimits.MaxStreams)
//	  of them, one caller's               a quarter    RESOURCE_EXHAUSTED, CALLER_WATCH_LIMIT (CallerShares.Watches)
//	changes Watch streams hold unsent     64 MiB       RESOURCE_EXHAUSTED (WatchLimits.MaxHeldBytes)
//	Watch streams reading the log at once half the cores none: the others wait their turn
//	candidates a lookup page judges       10,000       none: the page ends there, with a next token
//	WatchCall streams open at once        1,024        RESOURCE_EXHAUSTED (admission.Options.MaxWatchers)
//	  of them, one caller's               a quarter    RESOURCE_EXHAUSTED, CALLER_WATCH_LIMIT (CallerShares.CallWatches)
//	initial states' events WatchCall
//	  streams hold unsent                 262,144      RESOURCE_EXHAUSTED (admission.Options.MaxInitialEvents)
//	  of them, one caller's               a quarter    RESOURCE_EXHAUSTED, CALLER_INITIAL_LIMIT (CallerShares.CallInitialEvents)
//	whole initial states' events WatchCall
//	  streams start a second, on average  100,000      RESOURCE_EXHAUSTED, INITIAL_RATE (MaxInitialRate)
//	  of them, one caller's               a quarter    RESOURCE_EXHAUSTED, CALLER_INITIAL_RATE (CallerShares.CallInitialRate)
//	live sessions and lobby knocks        1,000,000    RESOURCE_EXHAUSTED, SESSION_LIMIT (admission.MemoryOptions.MaxSessions,
//	                                                   etcdstore.Options.MaxSessions: of the cluster)
//	  of them, one caller's               a quarter    RESOURCE_EXHAUSTED, CALLER_SESSION_LIMIT, nothing written
//	                                                   (admission.MemoryOptions.CallerShare, etcdstore.Options.CallerShare)
//	requests reads waiting for their      64 MiB       RESOURCE_EXHAUSTED, WAIT_LIMIT (MaxWaitingBytes)
//	  min_revision hold, encoded
//	  of them, one caller's               a quarter    RESOURCE_EXHAUSTED, CALLER_WAIT_LIMIT
//	health Watch streams open at once     1,024        RESOURCE_EXHAUSTED (MaxHealthWatches)
//	  of them, one connection's           4            RESOURCE_EXHAUSTED, CONNECTION_WATCH_LIMIT (MaxHealthWatchesPerConn)
//	service name of a health Check, Watch 256 bytes    INVALID_ARGUMENT (MaxHealthServiceLen)
//	server reflection streams open        1,024        RESOURCE_EXHAUSTED, REFLECTION_LIMIT (MaxReflectionStreams)
//	  of them, one connection's           4            RESOURCE_EXHAUSTED, CONNECTION_REFLECTION_LIMIT
//	                                                   (MaxReflectionStreamsPerConn)
//	backups in progress at once           2            RESOURCE_EXHAUSTED, BACKUP_LIMIT (MaxBackups)
//	levels of a resource below root       32           RESOURCE_EXHAUSTED, MAX_DEPTH (authz.MaxDepth)
//	roles defined on one resource         1,000        RESOURCE_EXHAUSTED (authz.MaxRolesPerScope)
//	quotas on one resource                10,000       RESOURCE_EXHAUSTED (authz.MaxQuotasPerScope)
//	live roles of one subject on one      100          RESOURCE_EXHAUSTED (authz.MaxRolesPerHolder)
//	  resource
//	bytes of a page of ListRoles,         ~2 MiB       none: the page ends short, with a token
//	  ListChanges, ExportPolicy                        (authz.MaxPageBytes)
//
// The policy limits apply to ApplyPolicy and to every policy loaded through
// ValidatePolicy (usher serve --policy, usher policy validate). Pages of
// ListRoles, ListChanges and ExportPolicy end at about authz.MaxPageBytes,
// within grpc-go's default 4 MiB, but for a page's first item, which comes
// whole (a change set of a large write, a resource's quotas, the catalog):
// a client that reads those must raise its grpc.MaxCallRecvMsgSize.
//
// A caller is one of the callers file; a server without one has a single
// caller, anonymous, whose share is the whole pool. The session store,
// which counts the sessions and knocks, keeps each caller's share of them,
// and the server tells it whose each Join and Knock is. Health needs no
// credentials, so its Watch streams are shared by connection instead.
//
// What a client may make the server hold before its calls are
// authenticated, connections, streams, headers and requests still
// arriving, is bounded by ConnLimits, and so are the answers its clients
// do not read (ConnLimits.SendBudget).
//
// A refusal quotes an offending value of more than 512 bytes only by its
// start and length. A request that is not valid protobuf (truncated,
// garbled, a string that is not UTF-8) never reaches a handler: it is
// refused INVALID_ARGUMENT, naming the field or what could not be read.
const (
	// MaxMessageSize is the largest request message the server reads, in
	// bytes (grpc.MaxRecvMsgSize). It is grpc-go's default, set explicitly
	// so that it is a documented part of the API.
	MaxMessageSize = 4 << 20

	// MaxBatch is the most checks one CheckBatch may ask.
	MaxBatch = 1000

	// MaxPageSize is the largest page_size of a list call.
	MaxPageSize = authz.MaxPageSize
	// MaxPageTokenLen is the longest page_token accepted, in bytes: well
	// above any token the server returns.
	MaxPageTokenLen = 4096

	// MaxPolicyPermissions is the most permissions a policy may declare.
	MaxPolicyPermissions = 10_000
	// MaxPolicyResources is the most resources a policy may list.
	MaxPolicyResources = 100_000
	// MaxPolicyRoles is the most role definitions a policy may hold.
	MaxPolicyRoles = 10_000
	// MaxPolicyCreatorRoles is the most creator roles a policy may name.
	MaxPolicyCreatorRoles = 1_000
	// MaxPolicyQuotas is the most quotas a policy may hold.
	MaxPolicyQuotas = 10_000
	// MaxPolicyAdmissions is the most admission rules a policy may hold.
	MaxPolicyAdmissions = 1_000

	// MaxPermissionParents is the most parents one permission may name.
	MaxPermissionParents = 100
	// MaxRolePermissions is the most permissions one role may list.
	MaxRolePermissions = 1_000
	// MaxRoleAssignableRoles is the most assignable_roles one role may list.
	MaxRoleAssignableRoles = 1_000
	// MaxRoleBindableOn is the most resource types one role's bindable_on
	// may list.
	MaxRoleBindableOn = 100
	// MaxBlockPermissions is the most permissions one block may list.
	MaxBlockPermissions = 1_000

	// MaxTextLen is the longest free text (a description, a block's
	// reason), in bytes.
	MaxTextLen = 1024
)

// maxEchoedValue is the longest value a refusal quotes whole; longer ones
// (a 4 MiB "name") are cut, so that the error stays small.
const maxEchoedValue = 512

// count refuses a list of n entries when more than limit are allowed.
func (v *validator) count(field string, n, limit int, what string) {
	if n > limit {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: fmt.Sprint(n),
			Reason: fmt.Sprintf("at most %d %s are allowed", limit, what)})
	}
}

// text refuses free text longer than MaxTextLen bytes.
func (v *validator) text(field, value string) { v.textUpTo(field, value, MaxTextLen) }

// textUpTo refuses free text longer than limit bytes, or holding a
// character that would make it read as other text where it is shown (see
// unshowable).
func (v *validator) textUpTo(field, value string, limit int) {
	if len(value) > limit {
		v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value,
			Reason: fmt.Sprintf("is %d bytes long; at most %d are allowed", len(value), limit)})
		return
	}
	for i, r := range value {
		if unshowable(r) {
			v.add(&authz.Error{Code: authz.Invalid, Field: field, Value: value,
				Reason: fmt.Sprintf("holds %U at byte %d: free text may hold line breaks and tabs but no other control character, nor a bidirectional embedding, override or isolate", r, i)})
			return
		}
	}
}

// unshowable reports whether r has no place in free text that an admin
// console, a log or a terminal shows: a control character other than a tab
// or a line break (NUL, ESC, which starts a terminal's escape sequences,
// C1), or a bidirectional embedding, override or isolate, which makes the
// text after it read in another order than it is stored ("Trojan Source").
// Marks such as U+200F, and joiners, are text.
func unshowable(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return false
	case unicode.IsControl(r):
		return true
	}
	return '\u202a' <= r && r <= '\u202e' || '\u2066' <= r && r <= '\u2069'
}

// pageToken refuses a page_token longer than MaxPageTokenLen bytes; the
// engine judges whether it is one the server returned.
func (v *validator) pageToken(value string) {
	if len(value) > MaxPageTokenLen {
		v.add(&authz.Error{Code: authz.Invalid, Field: "page_token", Value: value,
			Reason: fmt.Sprintf("is %d bytes long; at most %d are allowed", len(value), MaxPageTokenLen)})
	}
}

// clip shortens a value too long to quote whole, keeping valid UTF-8 and
// saying how long it was.
func clip(s string) string {
	if len(s) <= maxEchoedValue {
		return s
	}
	cut := maxEchoedValue / 2
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}
