package etcdstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/usher-authz/usher/admission"
	"github.com/usher-authz/usher/authz"
)

// recordVersion is the version of the records below; a record of another
// version is refused, so that a replica never guesses at a newer one's data.
// A field that a replica may leave out, and another ignore, without either
// misreading the record is added to version 1 rather than making a new
// version that would hide a newer replica's sessions from an older one: the
// caller of a session or knock, which a record written before it was
// recorded has not, and which then counts for nobody's share; the revision
// of a session's last Mark, without which its marks are its join's.
const recordVersion = 1

// sessionRecord is a session's value under s/.
type sessionRecord struct {
	V            int      `json:"v"`
	ID           string   `json:"id"`
	Subject      string   `json:"subject"`
	Call         string   `json:"call"`
	Caller       string   `json:"caller,omitempty"`
	Joined       int64    `json:"joined"`  // unix nanoseconds
	Expires      int64    `json:"expires"` // as last written; see the package doc
	Counted      bool     `json:"counted,omitempty"`
	Exclusive    []string `json:"exclusive,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	Revision     uint64   `json:"revision"`
	Marked       uint64   `json:"marked,omitempty"` // the revision of its last Mark
	Node         string   `json:"node,omitempty"`
}

// knockRecord is a knock's value under k/.
type knockRecord struct {
	V       int    `json:"v"`
	ID      string `json:"id"`
	Subject string `json:"subject"`
	Call    string `json:"call"`
	Caller  string `json:"caller,omitempty"`
	Note    string `json:"note,omitempty"`
	Knocked int64  `json:"knocked"`
	Expires int64  `json:"expires"`
	Node    string `json:"node,omitempty"`
}

// idRecord is the value under i/<id>: where the session or knock of that id
// lives, and, once it has ended by a replica's hand, why.
type idRecord struct {
	V       int           `json:"v"`
	Knock   bool          `json:"knock,omitempty"`
	Call    string        `json:"call"`
	Subject string        `json:"subject"`
	Ended   *endingRecord `json:"ended,omitempty"`
}

type endingRecord struct {
	Why     uint8  `json:"why"`
	Outcome uint8  `json:"outcome,omitempty"`
	BlockID string `json:"block,omitempty"`
	At      int64  `json:"at"`
	Node    string `json:"node,omitempty"`
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// encodeSession encodes s, marked at revision marked (0: never marked),
// as node writes it.
func encodeSession(s admission.Session, marked authz.Revision, node string) ([]byte, error) {
	return json.Marshal(sessionRecord{V: recordVersion, ID: s.ID, Subject: s.Subject, Call: s.Call, Caller: s.Caller,
		Joined: unixNano(s.Joined), Expires: unixNano(s.Expires), Counted: s.Counted, Exclusive: s.Exclusive,
		Capabilities: s.Capabilities, Revision: uint64(s.Revision), Marked: uint64(marked), Node: node})
}

// decodeSession decodes a session's record: the session, the revision it
// was last marked at, and the node that wrote it.
func decodeSession(b []byte) (admission.Session, authz.Revision, string, error) {
	var r sessionRecord
	if err := decode(b, &r, &r.V); err != nil {
		return admission.Session{}, 0, "", err
	}
	if r.ID == "" || r.Call == "" || r.Subject == "" {
		return admission.Session{}, 0, "", fmt.Errorf("a session record without id, call or subject")
	}
	return admission.Session{ID: r.ID, Subject: r.Subject, Call: r.Call, Caller: r.Caller, Joined: fromUnixNano(r.Joined),
		Expires: fromUnixNano(r.Expires), Counted: r.Counted, Exclusive: r.Exclusive, Capabilities: r.Capabilities,
		Revision: authz.Revision(r.Revision)}, authz.Revision(r.Marked), r.Node, nil
}

func encodeKnock(k admission.Knock, node string) ([]byte, error) {
	return json.Marshal(knockRecord{V: recordVersion, ID: k.ID, Subject: k.Subject, Call: k.Call, Caller: k.Caller, Note: k.Note,
		Knocked: unixNano(k.Knocked), Expires: unixNano(k.Expires), Node: node})
}

func decodeKnock(b []byte) (admission.Knock, string, error) {
	var r knockRecord
	if err := decode(b, &r, &r.V); err != nil {
		return admission.Knock{}, "", err
	}
	if r.ID == "" || r.Call == "" || r.Subject == "" {
		return admission.Knock{}, "", fmt.Errorf("a knock record without id, call or subject")
	}
	return admission.Knock{ID: r.ID, Subject: r.Subject, Call: r.Call, Caller: r.Caller, Note: r.Note,
		Knocked: fromUnixNano(r.Knocked), Expires: fromUnixNano(r.Expires)}, r.Node, nil
}

func encodeID(knock bool, call, subject string, ended *admission.Ending, at time.Time, node string) []byte {
	r := idRecord{V: recordVersion, Knock: knock, Call: call, Subject: subject}
	if ended != nil {
		r.Ended = &endingRecord{Why: uint8(ended.Why), Outcome: uint8(ended.Outcome), BlockID: ended.BlockID,
			At: unixNano(at), Node: node}
	}
	b, _ := json.Marshal(r) // strings and numbers only: it cannot fail
	return b
}

func decodeID(b []byte) (idRecord, error) {
	var r idRecord
	if err := decode(b, &r, &r.V); err != nil {
		return idRecord{}, err
	}
	return r, nil
}

// ending is the Ending an id record carries, and when it was written.
func (r idRecord) ending() (*admission.Ending, time.Time) {
	if r.Ended == nil {
		return nil, time.Time{}
	}
	e := r.Ended
	return &admission.Ending{Why: admission.Why(e.Why), Outcome: admission.Outcome(e.Outcome), BlockID: e.BlockID}, fromUnixNano(e.At)
}

func decode(b []byte, into any, version *int) error {
	if err := json.Unmarshal(b, into); err != nil {
		return err
	}
	if *version != recordVersion {
		return fmt.Errorf("a record of version %d; this replica reads version %d", *version, recordVersion)
	}
	return nil
}
