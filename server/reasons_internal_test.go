package server

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// The README's table of reasons lists, in the row of its code, every
// reason the server puts in an ErrorInfo of its own (the engine's are
// authz.Kind's): a program told that the reason comes "from the list
// below" must find each one there.
func TestREADMEListsEveryReasonOfTheServer(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n| code | reasons |\n")
	if !ok {
		t.Fatal(`README.md has no table "| code | reasons |"`)
	}
	table, _, _ = strings.Cut(table, "\n\n")
	rows := map[string]string{} // code -> its reasons' cell
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) < 2 {
			continue
		}
		for _, c := range regexp.MustCompile("`(\\w+)`").FindAllStringSubmatch(cells[0], -1) {
			rows[c[1]] = cells[1]
		}
	}
	for _, c := range []struct {
		code   codes.Code
		reason string
	}{
		{codes.Unauthenticated, reasonNoCredentials},
		{codes.Unauthenticated, reasonMalformedAuthorization},
		{codes.Unauthenticated, reasonBadToken},
		{codes.Unauthenticated, reasonUnknownCertificate},
		{codes.Unauthenticated, reasonExpiredCertificate},
		{codes.PermissionDenied, reasonCallerKind},
		{codes.OutOfRange, reasonCompacted},
		{codes.OutOfRange, reasonFutureRevision},
		{codes.Unimplemented, reasonNoDataFile},
		{codes.Unimplemented, reasonCompressed},
		{codes.Internal, reasonInternal},
		{codes.Canceled, reasonCancelled},
		{codes.DeadlineExceeded, reasonDeadlineExceeded},
		{codes.ResourceExhausted, reasonCallerWatchLimit},
		{codes.ResourceExhausted, reasonConnectionWatchLimit},
		{codes.ResourceExhausted, reasonCallerInitialLimit},
		{codes.ResourceExhausted, reasonCallerInitialRate},
		{codes.ResourceExhausted, reasonInitialRate},
		{codes.ResourceExhausted, reasonBackupLimit},
		{codes.ResourceExhausted, reasonBackupNoRoom},
		{codes.ResourceExhausted, reasonWaitLimit},
		{codes.ResourceExhausted, reasonCallerWaitLimit},
		{codes.ResourceExhausted, reasonReflectionLimit},
		{codes.ResourceExhausted, reasonConnectionReflectionLimit},
		{codes.ResourceExhausted, reasonSendBudget},
	} {
		name := c.code.String() // as the README spells codes
		cell, ok := rows[name]
		if !ok {
			t.Errorf("README.md's table of reasons has no row for %s, whose reason %s the server sends", name, c.reason)
			continue
		}
		if !strings.Contains(cell, "`"+c.reason+"`") {
			t.Errorf("README.md's table of reasons does not list %s under %s", c.reason, name)
		}
	}
}
