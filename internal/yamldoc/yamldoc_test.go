package yamldoc_test

import (
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
