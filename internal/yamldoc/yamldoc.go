// Package yamldoc holds what Usher's readers of YAML files share.
package yamldoc

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// One returns an error when data holds a second YAML document after its
// first: a reader that decodes one document would drop the rest unread,
// so a file that seemed to set something would not. A first document that
// does not parse is left to the reader to report.
func One(data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first, second yaml.Node
	if err := dec.Decode(&first); err != nil {
		return nil
	}
	switch err := dec.Decode(&second); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("the file holds one YAML document, and what follows the first does not parse: %w", err)
	}
	return fmt.Errorf("line %d: the file holds one YAML document; a second one starts here", second.Line)
}
