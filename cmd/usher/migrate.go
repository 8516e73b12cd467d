package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/etcd"
)

func migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy the data from a bbolt file into etcd, or from etcd into a file",
		Long: `Migrate copies Usher's data whole, from a bbolt data file into an etcd
cluster (--from FILE --to-etcd ENDPOINTS) or back (--from-etcd ENDPOINTS
--to FILE), at the revision it is at, so that revisions clients hold stay
meaningful; the copy's change log begins after that revision. The target
must be empty. No server may run on the source file; servers over the
target start after the copy. The copy is loaded again and compared with the
source, entity by entity. The etcd TLS and user flags are usher serve's.`,
		Example: `  usher migrate --from data/usher.db --to-etcd https://etcd-0:2379 --etcd-prefix /usher/ --etcd-ca ca.crt
  usher migrate --from-etcd https://etcd-0:2379 --etcd-prefix /usher/ --to data/usher.db`,
		Args: argsExactly(),
	}
	fs := cmd.Flags()
	from := fs.String("from", "", "bbolt data `file` to copy from")
	toEtcd := fs.String("to-etcd", "", "comma-separated etcd `endpoints` to copy into, under --etcd-prefix")
	fromEtcd := fs.String("from-etcd", "", "comma-separated etcd `endpoints` to copy from, under --etcd-prefix")
	to := fs.String("to", "", "bbolt data `file` to copy into; it must not exist or must hold nothing")
	ef := addEtcdFlags(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, w := context.Background(), cmd.OutOrStdout()
		switch {
		case *from != "" && *toEtcd != "" && *fromEtcd == "" && *to == "":
			return fileToEtcd(ctx, w, *from, *toEtcd, ef)
		case *fromEtcd != "" && *to != "" && *from == "" && *toEtcd == "":
			return etcdToFile(ctx, w, *fromEtcd, *to, ef)
		}
		return usagef("give --from FILE and --to-etcd ENDPOINTS, or --from-etcd ENDPOINTS and --to FILE")
	}
	return cmd
}

func fileToEtcd(ctx context.Context, w io.Writer, from, endpoints string, ef *etcdFlags) error {
	// bolt.Open would create a missing file, and copy nothing.
	if _, err := os.Stat(from); err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	// The file's lock keeps a server off it while it is read, so the copy
	// is of one revision and nothing is written after it.
	src, err := bolt.Open(from, bolt.Options{})
	if err != nil {
		return err
	}
	defer src.Close()
	snap, err := storage.Snapshot(ctx, src)
	if err != nil {
		return err
	}
	if snap.Revision == 0 {
		return fmt.Errorf("%s holds nothing (revision 0): there is nothing to migrate", from)
	}
	cli, err := ef.client(ctx, endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	dst := etcd.New(cli, etcd.Options{Prefix: ef.prefix, MaxTxnOps: ef.maxTxnOps, MaxTxnBytes: ef.maxTxnBytes})
	defer dst.Close()
	target := fmt.Sprintf("etcd %s prefix %s", endpoints, ef.prefix)
	if err := dst.Import(ctx, snap); err != nil {
		return fmt.Errorf("copying %s into %s: %w%s", from, target, err, partialHint(err, ef.prefix))
	}
	copied, err := storage.Snapshot(ctx, dst)
	if err != nil {
		return fmt.Errorf("loading the copy from %s: %w", target, err)
	}
	if err := storage.CompareSnapshots(snap, copied); err != nil {
		return fmt.Errorf("the copy in %s does not match %s: %w%s", target, from, err, partialHint(nil, ef.prefix))
	}
	fmt.Fprintf(w, "usher migrate: copied %s to %s at revision %d: %s; the copy matches\n", from, target, snap.Revision, counts(snap))
	return nil
}

// partialHint tells an operator how to clear what a failed copy left in
// etcd; a prefix that was not empty to begin with is not the copy's to
// clear.
func partialHint(err error, prefix string) string {
	if err != nil && errors.Is(err, etcd.ErrNotEmpty) {
		return ""
	}
	return fmt.Sprintf(" (what was copied is left under %s: remove it, e.g. with `etcdctl del --prefix %s`, before trying again)", prefix, prefix)
}

func etcdToFile(ctx context.Context, w io.Writer, endpoints, to string, ef *etcdFlags) error {
	if err := emptyOrMissing(ctx, to); err != nil {
		return err
	}
	cli, err := ef.client(ctx, endpoints)
	if err != nil {
		return err
	}
	defer cli.Close()
	src := etcd.New(cli, etcd.Options{Prefix: ef.prefix, MaxTxnOps: ef.maxTxnOps, MaxTxnBytes: ef.maxTxnBytes})
	defer src.Close()
	source := fmt.Sprintf("etcd %s prefix %s", endpoints, ef.prefix)
	// One etcd revision: the copy is of one Usher revision even while
	// servers go on writing.
	snap, err := storage.Snapshot(ctx, src)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	if snap.Revision == 0 {
		return fmt.Errorf("%s holds nothing (revision 0): there is nothing to migrate", source)
	}
	// The copy is written beside the target and renamed over it once it
	// checks out: a failure leaves no half-copied file behind.
	err = bolt.ReplaceFile(to, func(f *os.File) error {
		dst, err := bolt.Open(f.Name(), bolt.Options{})
		if err != nil {
			return err
		}
		if _, err := dst.Import(snap, "usher migrate"); err != nil {
			dst.Close()
			return err
		}
		if err := dst.Close(); err != nil {
			return err
		}
		return verifyFile(ctx, f.Name(), snap)
	})
	if err != nil {
		return fmt.Errorf("copying %s into %s: %w", source, to, err)
	}
	fmt.Fprintf(w, "usher migrate: copied %s to %s at revision %d: %s; the copy matches\n", source, to, snap.Revision, counts(snap))
	return nil
}

// emptyOrMissing refuses a target file that holds anything.
func emptyOrMissing(ctx context.Context, path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	store, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer store.Close()
	snap, err := storage.Snapshot(ctx, store)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if snap.Revision != 0 || len(storage.Puts(snap)) > 0 {
		return fmt.Errorf("--to: %s is not empty (revision %d: %s): migrate copies only into an empty file", path, snap.Revision, counts(snap))
	}
	return nil
}

// verifyFile checks a copied file as a backup is checked, and compares what
// it loads with what was copied.
func verifyFile(ctx context.Context, path string, want authz.Snapshot) error {
	if _, err := bolt.Verify(path); err != nil {
		return err
	}
	store, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	got, err := storage.Snapshot(ctx, store)
	if err != nil {
		return fmt.Errorf("loading the copy: %w", err)
	}
	if err := storage.CompareSnapshots(want, got); err != nil {
		return fmt.Errorf("the copy does not match: %w", err)
	}
	return nil
}

func counts(s authz.Snapshot) string {
	return fmt.Sprintf("%d permissions, %d resources, %d roles, %d grants, %d blocks, %d quotas, %d creator roles, %d default quotas, %d admission rules",
		len(s.Permissions), len(s.Resources), len(s.Roles), len(s.Grants), len(s.Blocks), len(s.Quotas), len(s.CreatorRoles), len(s.DefaultQuotas), len(s.Admissions))
}
