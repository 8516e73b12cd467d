package yamldoc_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/usher-authz/usher/internal/yamldoc"
)

func TestOneRefusesWhatFollowsTheFirstDocument(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{"a: 1\n---\nb: 2\n", "line 2: the file holds one YAML document; a second one starts here"},
		{"a: 1\n---\n", "line 2: the file holds one YAML document; a second one starts here"},
		{"a: 1\n---\nrules: [unclosed\n", "what follows the first does not parse"},
		{"a: 1\n...\n}}} not yaml {{{\n", "what follows the first does not parse"},
	} {
		err := yamldoc.One([]byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("One(%q) = %v, want an error saying %q", tc.data, err, tc.want)
		}
	}
}

func TestOneAcceptsASingleDocument(t *testing.T) {
	for _, data := range []string{"a: 1\n", "---\na: 1\n", "a: 1\n...\n", "{\"a\": 1}", "", "# only a comment\n", "a: [unclosed\n"} {
		if err := yamldoc.One([]byte(data)); err != nil {
			t.Errorf("One(%q) = %v, want nil (a first document that does not parse is the reader's to report)", data, err)
		}
	}
}

// ownJSON reads its JSON its own way, whatever the case of its keys.
type ownJSON struct {
	X string `json:"x"`
}

func (o *ownJSON) UnmarshalJSON([]byte) error { return nil }

func TestSpeltRefusesAFieldNameInAnotherCase(t *testing.T) {
	type inner struct {
		Algorithm string `json:"algorithm"`
	}
	type Common struct {
		Name string `json:"name"`
	}
	type doc struct {
		Common
		Kind    string            `json:"kind"`
		Dash    string            `json:"-,"`
		Own     ownJSON           `json:"own"`
		Inner   *inner            `json:"inner,omitempty"`
		List    []inner           `json:"list"`
		ByName  map[string]inner  `json:"by_name"`
		Raw     []json.RawMessage `json:"raw"`
		Skipped string            `json:"-"`
	}
	for _, tc := range []struct{ js, want string }{
		{`{"Kind": "admin"}`, `Kind: unknown field "Kind": field names are matched exactly; this one is "kind"`},
		// encoding/json folds the Kelvin sign to k.
		{`{"\u212aind": "admin"}`, "unknown field \"\u212aind\""},
		{`{"inner": {"ALGORITHM": "HS256"}}`, `inner.ALGORITHM: unknown field "ALGORITHM"`},
		{`{"list": [{"algorithm": "x"}, {"Algorithm": "y"}]}`, `list[1].Algorithm: unknown field "Algorithm"`},
		{`{"by_name": {"a": {"algoRithm": "x"}}}`, `by_name.a.algoRithm: unknown field "algoRithm"`},
		// An embedded struct's fields are the document's own.
		{`{"Name": "x"}`, `Name: unknown field "Name": field names are matched exactly; this one is "name"`},
	} {
		err := yamldoc.Spelt([]byte(tc.js), &doc{}, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Spelt(%s) = %v, want an error saying %q", tc.js, err, tc.want)
		}
	}
	for _, js := range []string{
		`{"kind": "admin", "inner": {"algorithm": "x"}, "list": [{"algorithm": "y"}], "by_name": {"A": {"algorithm": "z"}}}`,
		`{"raw": [{"Anything": 1}]}`,     // decoded, and judged, by the reader
		`{"name": "x", "-": "y"}`,        // an embedded struct's field, and one named "-"
		`{"own": {"X": 1}}`,              // a type that reads its own JSON
		`{"kinds": "x", "skipped": "y"}`, // unknown: the decoder's to refuse
		`not json`,
	} {
		if err := yamldoc.Spelt([]byte(js), &doc{}, ""); err != nil {
			t.Errorf("Spelt(%s) = %v, want nil", js, err)
		}
	}
}
