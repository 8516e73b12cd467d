package authz_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/usher-authz/usher/authz"
)

func TestNames(t *testing.T) {
	type32 := strings.Repeat("t", 32)
	id256 := strings.Repeat("9", 256)
	cases := []struct {
		name     string
		validate func(field, value string) error
		value    string
		ok       bool
	}{
		// resource: `type:id` (type `[a-z][a-z0-9_-]{0,31}`, id 1–256 printable chars, may contain `:`/`/`)
		{"resource: type:id", authz.ValidateResource, "account:acme", true},
		{"resource: id may contain `:`", authz.ValidateResource, "call:livestream:42", true},
		{"resource: id may contain `/`", authz.ValidateResource, "room:acme/sales/weekly", true},
		{"resource: type [a-z][a-z0-9_-]", authz.ValidateResource, "x9_-y:1", true},
		{"resource: type of 32 characters", authz.ValidateResource, type32 + ":1", true},
		{"resource: type of 33 characters", authz.ValidateResource, type32 + "t:1", false},
		{"resource: id of 256 characters", authz.ValidateResource, "call:" + id256, true},
		{"resource: id of 257 characters", authz.ValidateResource, "call:" + id256 + "9", false},
		{"resource: id of 256 characters counts characters, not bytes", authz.ValidateResource, "room:" + strings.Repeat("é", 256), true},
		{"resource: id of printable characters beyond ASCII", authz.ValidateResource, "room:café-☕", true},
		{"root: the reserved resource", authz.ValidateResource, "root", true},
		{"resource: empty", authz.ValidateResource, "", false},
		{"resource: no id", authz.ValidateResource, "acme", false},
		{"resource: empty id", authz.ValidateResource, "call:", false},
		{"resource: empty type", authz.ValidateResource, ":acme", false},
		{"resource: type starts with a letter", authz.ValidateResource, "1call:x", false},
		{"resource: type starts with a letter, not _", authz.ValidateResource, "_call:x", false},
		{"resource: type is lower case", authz.ValidateResource, "Account:acme", false},
		{"resource: type has no dots", authz.ValidateResource, "call.type:x", false},
		{"resource: id has no space", authz.ValidateResource, "call:a b", false},
		{"resource: id has no no-break space", authz.ValidateResource, "call:a\u00a0b", false},
		{"resource: id has no tab", authz.ValidateResource, "call:a\tb", false},
		{"resource: id has no control character", authz.ValidateResource, "call:a\x00", false},
		{"resource: id has no invisible format character", authz.ValidateResource, "call:a\u200bb", false},
		{"resource: id is valid UTF-8", authz.ValidateResource, "call:\xff", false},
		{"resource: `Root` is not root", authz.ValidateResource, "Root", false},

		// subject: `kind:id`, same rules
		{"subject: user:alice", authz.ValidateSubject, "user:alice", true},
		{"subject: apikey:k_9f2", authz.ValidateSubject, "apikey:k_9f2", true},
		{"subject: service:recorder", authz.ValidateSubject, "service:recorder", true},
		{"subject: an email as id", authz.ValidateSubject, "user:alice@example.com", true},
		{"subject: root is a resource, not a subject", authz.ValidateSubject, "root", false},
		{"subject: no kind", authz.ValidateSubject, "alice", false},
		{"subject: kind is lower case", authz.ValidateSubject, "User:alice", false},
		{"subject: empty id", authz.ValidateSubject, "user:", false},
		{"subject: id has no space", authz.ValidateSubject, "user:alice smith", false},
		{"subject: empty", authz.ValidateSubject, "", false},

		// permission: `[a-z0-9][a-z0-9._-]*`, at most 128 chars
		{"permission: join-call", authz.ValidatePermission, "join-call", true},
		{"permission: rooms.create", authz.ValidatePermission, "rooms.create", true},
		{"permission: company.manage-settings", authz.ValidatePermission, "company.manage-settings", true},
		{"permission: starts with a digit", authz.ValidatePermission, "2fa.enforce", true},
		{"permission: underscores", authz.ValidatePermission, "start_record", true},
		{"permission: 128 characters", authz.ValidatePermission, strings.Repeat("p", 128), true},
		{"permission: 129 characters", authz.ValidatePermission, strings.Repeat("p", 129), false},
		{"permission: empty", authz.ValidatePermission, "", false},
		{"permission: starts with -", authz.ValidatePermission, "-join", false},
		{"permission: starts with .", authz.ValidatePermission, ".join", false},
		{"permission: starts with _", authz.ValidatePermission, "_join", false},
		{"permission: upper case", authz.ValidatePermission, "Join-call", false},
		{"permission: `*` is for roles, not a permission name", authz.ValidatePermission, "*", false},
		{"permission: no colon", authz.ValidatePermission, "call:join", false},
		{"permission: no slash", authz.ValidatePermission, "call/join", false},
		{"permission: no space", authz.ValidatePermission, "join call", false},
		{"permission: ASCII only", authz.ValidatePermission, "réunion", false},

		// role: same form as a permission
		{"role: owner", authz.ValidateRoleName, "owner", true},
		{"role: call-member", authz.ValidateRoleName, "call-member", true},
		{"role: event.producer", authz.ValidateRoleName, "event.producer", true},
		{"role: 128 characters", authz.ValidateRoleName, strings.Repeat("r", 128), true},
		{"role: 129 characters", authz.ValidateRoleName, strings.Repeat("r", 129), false},
		{"role: upper case", authz.ValidateRoleName, "Owner", false},
		{"role: empty", authz.ValidateRoleName, "", false},
		{"role: `*`", authz.ValidateRoleName, "*", false},

		// a resource type on its own, as in bindable_on
		{"type: call", authz.ValidateType, "call", true},
		{"type: 32 characters", authz.ValidateType, type32, true},
		{"type: 33 characters", authz.ValidateType, type32 + "t", false},
		{"type: empty", authz.ValidateType, "", false},
		{"type: starts with a digit", authz.ValidateType, "9call", false},
		{"type: upper case", authz.ValidateType, "Call", false},
		{"type: no colon", authz.ValidateType, "call:x", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.validate("field.name", tc.value)
			if tc.ok {
				if err != nil {
					t.Errorf("%q refused: %v", tc.value, err)
				}
				return
			}
			wantError(t, err, authz.Invalid, "field.name", tc.value)
			if err != nil && !strings.Contains(err.Error(), "field.name") {
				t.Errorf("message %q does not name the field", err)
			}
		})
	}
}

// A name too long is refused stating its length as the limit counts it:
// a permission or role name in bytes, an id in characters.
func TestANameTooLongStatesItsLength(t *testing.T) {
	for _, c := range []struct {
		name     string
		validate func(field, value string) error
		value    string
		want     string
	}{
		{"a permission name of 70 two-byte characters is 140 bytes", authz.ValidatePermission, strings.Repeat("é", 70), "is 140 bytes long; at most 128"},
		{"a role name of 129 bytes", authz.ValidateRoleName, strings.Repeat("r", 129), "is 129 bytes long; at most 128"},
		{"an id of 257 two-byte characters is 257 characters", authz.ValidateSubject, "user:" + strings.Repeat("é", 257), "is 257 characters long; at most 256"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.validate("field.name", c.value)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("refusal %v; want it to say it %s", err, c.want)
			}
		})
	}
}

func TestTypeOf(t *testing.T) {
	for _, tc := range []struct{ resource, typ string }{
		{"account:acme", "account"},
		{"call:livestream:42", "call"},
		{"room:a/b:c", "room"},
		{"root", "root"},
	} {
		if got := authz.TypeOf(tc.resource); got != tc.typ {
			t.Errorf("TypeOf(%q) = %q, want %q", tc.resource, got, tc.typ)
		}
	}
}

// The oracle below restates DESIGN.md's model table independently of
// names.go, for the fuzz targets to hold the validators to.

var (
	typeRE       = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	permissionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
)

// typedName reports whether s is type:id with a valid type and an id of 1 to
// 256 printable characters (no spaces; U+FFFD, the mark of bad UTF-8, is
// refused too).
func typedName(s string) bool {
	typ, id, ok := strings.Cut(s, ":")
	if !ok || !typeRE.MatchString(typ) || !utf8.ValidString(id) {
		return false
	}
	n := utf8.RuneCountInString(id)
	if n < 1 || n > 256 {
		return false
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

func fuzzName(f *testing.F, validate func(field, value string) error, oracle func(string) bool, more func(t *testing.T, s string)) {
	for _, s := range []string{"", "root", "account:acme", "call:livestream:42", "user:alice", "join-call", "rooms.create", "a:\xff", "a:b c", "*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := validate("field", s)
		if want := oracle(s); (err == nil) != want {
			t.Fatalf("validate(%q) = %v; DESIGN.md's rules say valid = %v", s, err, want)
		}
		if err != nil {
			e, ok := err.(*authz.Error)
			if !ok || e.Code != authz.Invalid || e.Field != "field" || e.Value != s {
				t.Fatalf("validate(%q) = %#v, want an Invalid *authz.Error on field %q with the value", s, err, "field")
			}
			return
		}
		more(t, s)
	})
}

// roundTrip checks that an accepted type:id splits back into its type.
func roundTrip(t *testing.T, s string) {
	typ := authz.TypeOf(s)
	if err := authz.ValidateType("type", typ); err != nil {
		t.Fatalf("TypeOf(%q) = %q, which is not a valid type: %v", s, typ, err)
	}
	if !strings.HasPrefix(s, typ+":") || len(s) == len(typ)+1 {
		t.Fatalf("TypeOf(%q) = %q, not the part before the first colon of a non-empty id", s, typ)
	}
}

func FuzzValidateResource(f *testing.F) {
	fuzzName(f, authz.ValidateResource, func(s string) bool { return s == "root" || typedName(s) }, func(t *testing.T, s string) {
		if s == authz.RootName {
			if authz.TypeOf(s) != authz.RootName {
				t.Fatalf("TypeOf(root) = %q", authz.TypeOf(s))
			}
			return
		}
		roundTrip(t, s)
		if err := authz.ValidateSubject("subject", s); err != nil {
			t.Fatalf("subject: `kind:id`, same rules, but %q is a resource and not a subject: %v", s, err)
		}
	})
}

func FuzzValidateSubject(f *testing.F) {
	fuzzName(f, authz.ValidateSubject, typedName, func(t *testing.T, s string) {
		roundTrip(t, s)
		if err := authz.ValidateResource("resource", s); err != nil {
			t.Fatalf("subject: `kind:id`, same rules, but %q is a subject and not a resource: %v", s, err)
		}
	})
}

func FuzzValidatePermission(f *testing.F) {
	fuzzName(f, authz.ValidatePermission, func(s string) bool { return len(s) <= 128 && permissionRE.MatchString(s) }, func(t *testing.T, s string) {
		if err := authz.ValidateRoleName("role", s); err != nil {
			t.Fatalf("role: same form as a permission, but %q is a permission and not a role: %v", s, err)
		}
		if authz.TypeOf(s) != s {
			t.Fatalf("a permission has no colon, yet TypeOf(%q) = %q", s, authz.TypeOf(s))
		}
	})
}

// A subject kind is refused as a subject kind, not as a resource type.
func TestValidateKindNamesWhatItChecks(t *testing.T) {
	err := authz.ValidateKind("subject_kind", "Bad")
	var e *authz.Error
	if !errors.As(err, &e) || e.Code != authz.Invalid || e.Field != "subject_kind" || e.Value != "Bad" || !strings.Contains(e.Reason, "subject kind must match") {
		t.Errorf("ValidateKind(Bad) = %v, want INVALID_ARGUMENT on subject_kind saying what a subject kind must match", err)
	}
	if err := authz.ValidateKind("subject_kind", "user"); err != nil {
		t.Errorf("ValidateKind(user) = %v", err)
	}
}
