package authz

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Name rules, from DESIGN.md's model table.
const (
	// MaxTypeLen is the longest resource type or subject kind, in bytes.
	MaxTypeLen = 32
	// MaxIDLen is the longest id of a resource or subject, in characters.
	MaxIDLen = 256
	// MaxPermissionLen is the longest permission or role name, in bytes.
	MaxPermissionLen = 128
)

// ValidateResource checks that value is "root" or a well-formed type:id.
func ValidateResource(field, value string) error {
	if value == RootName {
		return nil
	}
	return validateTypedName(field, value, "resource")
}

// ValidateSubject checks that value is a well-formed kind:id.
func ValidateSubject(field, value string) error {
	return validateTypedName(field, value, "subject")
}

// ValidatePermission checks the form of a permission name.
func ValidatePermission(field, value string) error {
	return validateDotted(field, value, "permission")
}

// ValidateRoleName checks the form of a role name, which is that of a
// permission.
func ValidateRoleName(field, value string) error {
	return validateDotted(field, value, "role")
}

// ValidateType checks the form of a resource type such as "call".
func ValidateType(field, value string) error {
	return validateType(field, value, "resource type")
}

// ValidateKind checks the form of a subject kind such as "user", which
// follows a resource type's.
func ValidateKind(field, value string) error {
	return validateType(field, value, "subject kind")
}

// validateType refuses value unless it has a type's form, naming it what.
func validateType(field, value, what string) error {
	if !validType(value) {
		return errorf(Invalid, field, value, "%s must match [a-z][a-z0-9_-]{0,31}", what)
	}
	return nil
}

// TypeOf returns the type part of a resource name ("root" for root).
func TypeOf(resource string) string {
	if t, _, ok := strings.Cut(resource, ":"); ok {
		return t
	}
	return resource
}

func validateTypedName(field, value, what string) error {
	if value == "" {
		return errorf(Invalid, field, value, "%s must not be empty", what)
	}
	typ, id, ok := strings.Cut(value, ":")
	kind := "type"
	if what == "subject" {
		kind = "kind"
	}
	if !ok {
		return errorf(Invalid, field, value, "%s must have the form %s:id", what, kind)
	}
	if !validType(typ) {
		return errorf(Invalid, field, value, "%s %s %q must match [a-z][a-z0-9_-]{0,31}", what, kind, typ)
	}
	if id == "" {
		return errorf(Invalid, field, value, "%s id must not be empty", what)
	}
	if printableASCII(id) && len(id) <= MaxIDLen {
		return nil
	}
	if n := utf8.RuneCountInString(id); n > MaxIDLen {
		return errorf(Invalid, field, value, "%s id is %d characters long; at most %d are allowed", what, n, MaxIDLen)
	}
	for i, r := range id {
		if r == utf8.RuneError || !unicode.IsGraphic(r) || unicode.IsSpace(r) {
			return errorf(Invalid, field, value, "%s id has a non-printable or space character at byte %d", what, i)
		}
	}
	return nil
}

// printableASCII reports whether s is made of ASCII characters that are
// graphic and not space, '!' to '~': the common case of the rule below,
// decided without decoding runes.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func validType(t string) bool {
	if t == "" || len(t) > MaxTypeLen || t[0] < 'a' || t[0] > 'z' {
		return false
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validateDotted(field, value, what string) error {
	if value == "" {
		return errorf(Invalid, field, value, "%s must not be empty", what)
	}
	if len(value) > MaxPermissionLen {
		return errorf(Invalid, field, value, "%s is %d bytes long; at most %d are allowed", what, len(value), MaxPermissionLen)
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '.' || c == '_' || c == '-'
		}
		if !ok {
			return errorf(Invalid, field, value, "%s must match [a-z0-9][a-z0-9._-]*", what)
		}
	}
	return nil
}
