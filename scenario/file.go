package scenario

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/usher-authz/usher/internal/yamldoc"
)

// File is a parsed scenario file.
type File struct {
	Path   string
	Policy string // a policy file, relative to the scenario file, or a shipped policy's name
	Steps  []Step
}

// Step is one line of a scenario: exactly one action, with what it expects.
type Step struct {
	Line  int
	Quote string `yaml:"quote"`

	// Writes. Without Refused a write is setup and must succeed; with it, it
	// is an expectation that the write is refused with that code.
	Register    *Register `yaml:"register"`
	Delete      *Delete   `yaml:"delete"`
	Grant       *Binding  `yaml:"grant"`
	Revoke      *Binding  `yaml:"revoke"`
	Block       *Block    `yaml:"block"`
	Unblock     *Block    `yaml:"unblock"`
	PutRole     *Role     `yaml:"put_role"`
	DeleteRole  *Role     `yaml:"delete_role"`
	PutQuota    *Quota    `yaml:"put_quota"`
	DeleteQuota *Quota    `yaml:"delete_quota"`
	Admit       *Binding  `yaml:"admit"`
	GoLive      *Stage    `yaml:"go_live"`
	Refused     string    `yaml:"refused"`
	// Rule is the rule a refusal must name, e.g. "no escalation".
	Rule string `yaml:"rule"`

	// Advance lets time pass on the scenario's clock, e.g. "2h".
	Advance string `yaml:"advance"`

	// Join asks to enter a call; with Outcome it is an expectation, without
	// it setup that must be admitted. Leave ends the subject's session.
	Join    *Presence `yaml:"join"`
	Leave   *Presence `yaml:"leave"`
	Outcome string    `yaml:"outcome"`

	// Reads, each an expectation.
	Check       *Check       `yaml:"check"`
	Permissions *Permissions `yaml:"permissions"`
	Roles       *Roles       `yaml:"roles"`

	// What a check expects: Allowed always, the rest when set.
	Allowed *bool  `yaml:"allowed"`
	Reason  string `yaml:"reason"`
	Role    string `yaml:"role"`
	Scope   string `yaml:"scope"`
	// What permissions or roles expect: exactly this set.
	Exactly []string `yaml:"exactly"`
}

// Presence names a subject in a call.
type Presence struct {
	Subject  string `yaml:"subject"`
	Resource string `yaml:"resource"`
}

// Register registers (or moves) a resource.
type Register struct {
	Name   string `yaml:"name"`
	Parent string `yaml:"parent"`
	Actor  string `yaml:"actor"`
}

// Delete deletes a resource.
type Delete struct {
	Name  string `yaml:"name"`
	Actor string `yaml:"actor"`
}

// Binding is a grant or a revoke.
type Binding struct {
	Subject  string `yaml:"subject"`
	Role     string `yaml:"role"`
	Resource string `yaml:"resource"`
	Actor    string `yaml:"actor"`
	// ExpiresIn makes a grant expire that long after the scenario's clock,
	// e.g. "1h".
	ExpiresIn string `yaml:"expires_in"`
}

// Block is a block or an unblock. ID names a block within the scenario, so
// that a later unblock can lift that one; an unblock without one lifts all.
type Block struct {
	Subject     string   `yaml:"subject"`
	Resource    string   `yaml:"resource"`
	Permissions []string `yaml:"permissions"`
	Reason      string   `yaml:"reason"`
	Actor       string   `yaml:"actor"`
	ID          string   `yaml:"id"`
	ExpiresIn   string   `yaml:"expires_in"`
}

// Role defines or deletes a role.
type Role struct {
	Name            string   `yaml:"name"`
	Scope           string   `yaml:"scope"`
	Permissions     []string `yaml:"permissions"`
	AssignableRoles []string `yaml:"assignable_roles"`
	BindableOn      []string `yaml:"bindable_on"`
	MaxHolders      uint32   `yaml:"max_holders"`
	Actor           string   `yaml:"actor"`
}

// Stage takes a call live (AdmissionService.GoLive): from then on it lets
// in holders of the join permission, not only those of the backstage one.
type Stage struct {
	Resource string `yaml:"resource"`
	Actor    string `yaml:"actor"`
}

// Quota sets a quota.
type Quota struct {
	Scope        string `yaml:"scope"`
	ResourceType string `yaml:"resource_type"`
	Subject      string `yaml:"subject"`
	Limit        uint32 `yaml:"limit"`
	Actor        string `yaml:"actor"`
}

// Check asks whether a subject holds a permission on a resource.
type Check struct {
	Subject    string `yaml:"subject"`
	Permission string `yaml:"permission"`
	Resource   string `yaml:"resource"`
}

// Permissions asks for a subject's effective permissions on a resource.
type Permissions struct {
	Subject  string `yaml:"subject"`
	Resource string `yaml:"resource"`
}

// Roles asks for the roles visible at a resource, or those an actor may
// assign there.
type Roles struct {
	Resource     string `yaml:"resource"`
	AssignableBy string `yaml:"assignable_by"`
}

var actions = []string{"register", "delete", "grant", "revoke", "block", "unblock", "put_role", "delete_role",
	"put_quota", "delete_quota", "admit", "go_live", "advance", "join", "leave", "check", "permissions", "roles"}

var stepKeys = append([]string{"quote", "refused", "rule", "allowed", "reason", "role", "scope", "exactly", "outcome"}, actions...)

// expects names the fields that say what each action expects; a step's
// other fields, but for its quote, would be read by nothing.
var expects = map[string][]string{
	"check": {"allowed", "reason", "role", "scope"}, "permissions": {"exactly"}, "roles": {"exactly"},
	"join": {"outcome"}, "leave": nil, "advance": nil,
}

// writeExpects is what a write expects: a refusal, and the rule it names.
var writeExpects = []string{"refused", "rule"}

// unread names the fields of an action's value that the action shares
// with another but does not read: an unblock lifts whole blocks, a revoke
// sets no expiry, an admit grants the admission rule's role.
var unread = map[string][]string{
	"unblock": {"permissions", "reason", "expires_in"}, "revoke": {"expires_in"}, "admit": {"role"},
	"delete_role": {"permissions", "assignable_roles", "bindable_on", "max_holders"}, "delete_quota": {"limit"},
}

// Parse reads a scenario file. Errors name the file and line.
func Parse(path string, data []byte) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := yamldoc.One(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: a scenario is a mapping with policy and steps", path)
	}
	f := &File{Path: path}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, value := root.Content[i], root.Content[i+1]
		switch key.Value {
		case "policy":
			f.Policy = value.Value
		case "steps":
			if value.Kind != yaml.SequenceNode {
				return nil, fmt.Errorf("%s:%d: steps must be a list", path, value.Line)
			}
			for _, n := range value.Content {
				s, err := parseStep(n)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %w", path, n.Line, err)
				}
				f.Steps = append(f.Steps, s)
			}
		default:
			return nil, fmt.Errorf("%s:%d: unknown field %q (want policy, steps)", path, key.Line, key.Value)
		}
	}
	if f.Policy == "" {
		return nil, fmt.Errorf("%s: no policy named", path)
	}
	return f, nil
}

// parseStep decodes one step strictly: unknown fields anywhere in it are
// errors, and it must hold exactly one action.
func parseStep(n *yaml.Node) (Step, error) {
	var s Step
	if n.Kind != yaml.MappingNode {
		return s, fmt.Errorf("a step is a mapping")
	}
	var found []string
	for i := 0; i < len(n.Content); i += 2 {
		key := n.Content[i].Value
		if !slices.Contains(stepKeys, key) {
			return s, fmt.Errorf("unknown field %q in a step", key)
		}
		if slices.Contains(actions, key) {
			found = append(found, key)
		}
	}
	if len(found) != 1 {
		return s, fmt.Errorf("a step has exactly one of %s; this one has %v", strings.Join(actions, ", "), found)
	}
	applies, ok := expects[found[0]]
	if !ok {
		applies = writeExpects
	}
	for i := 0; i < len(n.Content); i += 2 {
		key := n.Content[i].Value
		if key != "quote" && key != found[0] && !slices.Contains(applies, key) {
			return s, fmt.Errorf("field %q does not apply to a %s step", key, found[0])
		}
		if key == found[0] && n.Content[i+1].Kind == yaml.MappingNode {
			action := n.Content[i+1]
			for j := 0; j < len(action.Content); j += 2 {
				if field := action.Content[j].Value; slices.Contains(unread[key], field) {
					return s, fmt.Errorf("field %q does not apply to %s %s: nothing reads it", field, article(key), key)
				}
			}
		}
	}
	var raw strings.Builder
	enc := yaml.NewEncoder(&raw)
	if err := enc.Encode(n); err != nil {
		return s, err
	}
	dec := yaml.NewDecoder(strings.NewReader(raw.String()))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return s, err
	}
	if !s.hasAction() {
		return s, fmt.Errorf("the step's %s has no value", found[0])
	}
	if s.Rule != "" && s.Refused == "" {
		return s, fmt.Errorf("rule names the rule of a refusal: the step has no refused")
	}
	s.Line = n.Line
	return s, nil
}

// hasAction reports whether the step's action has a value: `grant:` alone
// decodes to nothing.
func (s Step) hasAction() bool {
	return s.Register != nil || s.Delete != nil || s.Grant != nil || s.Revoke != nil || s.Block != nil ||
		s.Unblock != nil || s.PutRole != nil || s.DeleteRole != nil || s.PutQuota != nil || s.DeleteQuota != nil ||
		s.Admit != nil || s.GoLive != nil || s.Advance != "" || s.Join != nil || s.Leave != nil || s.Check != nil || s.Permissions != nil || s.Roles != nil
}

// Load reads and parses a scenario file.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Expectation reports whether the step is an expectation, which passes or
// fails, rather than setup, which must succeed for the scenario to go on:
// a read, a write with refused, a join with an outcome.
func (s Step) Expectation() bool {
	return s.Check != nil || s.Permissions != nil || s.Roles != nil || s.Refused != "" || (s.Join != nil && s.Outcome != "")
}

// Describe says what the step does, e.g. "check user:a join-call on
// account:acme"; failures start with it.
func (s Step) Describe() string {
	switch {
	case s.Check != nil:
		return fmt.Sprintf("check %s %s on %s", s.Check.Subject, s.Check.Permission, s.Check.Resource)
	case s.Permissions != nil:
		return fmt.Sprintf("permissions of %s on %s", s.Permissions.Subject, s.Permissions.Resource)
	case s.Roles != nil && s.Roles.AssignableBy != "":
		return fmt.Sprintf("roles %s may assign at %s", s.Roles.AssignableBy, s.Roles.Resource)
	case s.Roles != nil:
		return "roles at " + s.Roles.Resource
	case s.Join != nil:
		return fmt.Sprintf("join %s to %s", s.Join.Subject, s.Join.Resource)
	case s.Leave != nil:
		return fmt.Sprintf("leave %s from %s", s.Leave.Subject, s.Leave.Resource)
	case s.Advance != "":
		return "advance " + s.Advance
	case s.Register != nil:
		return fmt.Sprintf("register %s under %s", s.Register.Name, or(s.Register.Parent, "root"))
	case s.Delete != nil:
		return "delete " + s.Delete.Name
	case s.Grant != nil:
		return fmt.Sprintf("grant %s %s on %s", s.Grant.Subject, s.Grant.Role, s.Grant.Resource)
	case s.Revoke != nil:
		return fmt.Sprintf("revoke %s %s on %s", s.Revoke.Subject, s.Revoke.Role, s.Revoke.Resource)
	case s.Block != nil:
		return fmt.Sprintf("block %s on %s", s.Block.Subject, s.Block.Resource)
	case s.Unblock != nil:
		return fmt.Sprintf("unblock %s on %s", s.Unblock.Subject, s.Unblock.Resource)
	case s.PutRole != nil:
		return fmt.Sprintf("put role %s at %s", s.PutRole.Name, s.PutRole.Scope)
	case s.DeleteRole != nil:
		return fmt.Sprintf("delete role %s at %s", s.DeleteRole.Name, s.DeleteRole.Scope)
	case s.PutQuota != nil:
		return fmt.Sprintf("put quota on %s for %s", s.PutQuota.Scope, s.PutQuota.ResourceType)
	case s.DeleteQuota != nil:
		return fmt.Sprintf("delete quota on %s for %s", s.DeleteQuota.Scope, s.DeleteQuota.ResourceType)
	case s.Admit != nil:
		return fmt.Sprintf("admit %s to %s", s.Admit.Subject, s.Admit.Resource)
	case s.GoLive != nil:
		return "take " + s.GoLive.Resource + " live"
	}
	return "an empty step"
}

// Name is how reports and --run name the step: its quote, or else what it
// does.
func (s Step) Name() string {
	if s.Quote != "" {
		return s.Quote
	}
	return s.Describe()
}

// article is the indefinite article before an action's name.
func article(action string) string {
	if strings.ContainsRune("aeiou", rune(action[0])) {
		return "an"
	}
	return "a"
}
