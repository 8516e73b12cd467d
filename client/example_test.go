package client_test

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/usher-authz/usher/client"
	usherv1 "github.com/usher-authz/usher/gen/usher/v1"
)

// A platform service dials Usher once, with TLS and the token `usher
// token` made for it, and shares the client. (README.md shows this body.)
func Example() {
	c, err := client.New("usher.internal:7070",
		client.WithTLS("/etc/usher/ca.crt", "", ""),
		client.WithTokenFile("/var/run/secrets/usher/token"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	// May alice join? A denial is an answer, not an error.
	ok, d, err := c.Check(ctx, "user:alice", "join-call", "call:default:42")
	if err != nil {
		log.Fatal(err)
	}
	if !ok {
		log.Printf("denied: %s", d.Reason) // REASON_NO_GRANT, REASON_BLOCKED, REASON_UNKNOWN_RESOURCE
	}

	// A refusal is data: the reason, the field and its value, the rule.
	_, err = c.Admin.Grant(ctx, &usherv1.GrantRequest{
		Subject: "user:dave", Role: "owner", Resource: "call:default:42", Actor: "user:hank"})
	var e *client.Error
	if client.IsDenied(err) && errors.As(err, &e) {
		log.Printf("%s may not: %s (%s)", e.Value, e.Reason, e.Metadata["rule"]) // user:hank may not: MISSING_PERMISSION (missing permission)
	}
}

// Mutual TLS: the client certificate names the caller, and is read again
// when cert-manager renews it.
func ExampleWithTLS() {
	c, err := client.New("usher.internal:7070",
		client.WithTLS("/etc/usher/ca.crt", "/etc/usher/tls/tls.crt", "/etc/usher/tls/tls.key"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// Every error of a call is an *client.Error: the reason and the offending
// field are data, not words in a message.
func ExampleError() {
	c, err := client.New("127.0.0.1:7070", client.WithToken(os.Getenv("USHER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Admin.Grant(context.Background(), &usherv1.GrantRequest{
		Subject: "user:dave", Role: "owner", Resource: "event:launch", Actor: "user:hank"})
	var e *client.Error
	switch {
	case err == nil:
	case client.IsDenied(err) && errors.As(err, &e):
		// NOT_ASSIGNABLE, NO_ESCALATION, ...: which rule refused, and what.
		log.Printf("%s may not: %s (rule %q, role %q)", e.Value, e.Reason, e.Metadata["rule"], e.Metadata["role"])
	case errors.Is(err, client.ErrQuotaExceeded):
		log.Print("over quota")
	default:
		log.Fatal(err)
	}
}

// A media server's sidecar admits a participant and keeps the session for
// as long as the participant is connected.
func ExampleJoinResult_Keep() {
	c, err := client.New("127.0.0.1:7070", client.WithToken(os.Getenv("USHER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	r, err := c.Join(ctx, "user:alice", "call:default:42")
	if err != nil {
		log.Fatal(err)
	}
	if !r.Admitted() {
		log.Printf("not admitted: %s (%s)", r.GetOutcome(), r.GetReason())
		return
	}
	// Hand r.GetLivekitToken() to the participant, then keep the session.
	s, err := r.Keep(ctx)
	if err != nil {
		log.Fatal(err)
	}
	disconnected := make(chan struct{}) // closed by the media server
	select {
	case <-disconnected:
		_ = s.Leave(ctx)
	case <-s.Done():
		// Banned, no longer granted, or out of reach past the lease:
		// remove the participant from the room.
		log.Printf("session %s ended: %v", s.ID, s.Wait())
	}
}

// A service keeps a copy of the grants on its calls and follows the change
// stream; after a disconnect it resumes where it stopped, and when the log
// no longer reaches back that far it reloads.
func ExampleClient_Watch() {
	c, err := client.New("127.0.0.1:7070", client.WithToken(os.Getenv("USHER_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	reload := func(ctx context.Context, cause error) (uint64, error) {
		// Read what is kept again (ListGrants, ...) and return the
		// revision those reads answered at.
		resp, err := c.Authorization.GetRevision(ctx, &usherv1.GetRevisionRequest{})
		return resp.GetRevision(), err
	}
	err = c.Watch(ctx, &usherv1.WatchRequest{AfterRevision: 0, Resource: "call:default:42"},
		func(m *usherv1.WatchResponse) error {
			if m.GetChange() == nil {
				return nil // the start, or progress: m.GetRevision() is how far it has come
			}
			for _, ch := range m.GetChange().GetChanges() {
				slog.Info("changed", "revision", m.GetRevision(), "op", ch.GetOp())
			}
			return nil
		},
		client.Reload(reload),
		client.OnRetry(func(err error) { slog.Warn("watch interrupted; resuming", "err", err) }))
	log.Fatal(err)
}
