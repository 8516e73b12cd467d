package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
)

// The load tools' refusals: they aim at loopback only, and populate never
// writes into an existing data file.
func TestBenchRefusals(t *testing.T) {
	for _, addr := range []string{"10.0.0.1:7070", "example.com:7070", "0.0.0.0:7070"} {
		if _, err := benchConn(addr); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("benchConn(%s) = %v, want a refusal naming loopback", addr, err)
		}
	}
	for _, args := range [][]string{{"check", "--addr", "10.0.0.1:7070"}, {"grant", "--addr", "10.0.0.1:7070"}} {
		if err := benchCmd(args); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("usher bench %v = %v, want a refusal naming loopback", args, err)
		}
	}
	data := filepath.Join(t.TempDir(), "usher.db")
	if err := os.WriteFile(data, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := benchCmd([]string{"populate", "--data", data, "--grants", "10"}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("populate over an existing file = %v, want a refusal", err)
	}
	if got, _ := os.ReadFile(data); string(got) != "precious" {
		t.Errorf("populate changed the existing file to %q", got)
	}
	if err := benchCmd([]string{"nonsense"}); err == nil || !strings.Contains(err.Error(), "unknown bench command") {
		t.Errorf("usher bench nonsense = %v", err)
	}
}

// A small populate writes a data file a server can start on.
func TestBenchPopulateSmall(t *testing.T) {
	data := filepath.Join(t.TempDir(), "usher.db")
	err := benchCmd([]string{"populate", "--data", data, "--accounts", "2", "--workspaces", "2", "--calltypes", "2",
		"--calls", "3", "--users", "50", "--grants", "300", "--blocks", "5"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := bolt.Open(data, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	snap, err := storage.Snapshot(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != 1 || len(snap.Grants) != 300 || len(snap.Blocks) != 5 || len(snap.Resources) != 2+4+8+24 {
		t.Errorf("populated revision %d with %d grants, %d blocks, %d resources; want 1, 300, 5, 38",
			snap.Revision, len(snap.Grants), len(snap.Blocks), len(snap.Resources))
	}
}
