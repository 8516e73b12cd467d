package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
	"github.com/usher-authz/usher/storage/bolt"
	"github.com/usher-authz/usher/storage/etcd"
)

// backendFlags say where a server keeps its data: a bbolt file, or an etcd
// cluster when --etcd is given.
type backendFlags struct {
	data      string
	endpoints string
	retain    uint64
	fs        *pflag.FlagSet // to tell --log-retention 0 from no flag
	*etcdFlags
}

// etcdFlags say how to reach the etcd cluster and where in it Usher's data
// lives, beside the endpoints, which each command names its own way.
type etcdFlags struct {
	prefix       string
	ca           string
	cert         string
	key          string
	user         string
	passwordFile string
	maxTxnOps    int
	maxTxnBytes  int
}

func addBackendFlags(fs *pflag.FlagSet) *backendFlags {
	b := &backendFlags{fs: fs}
	fs.StringVar(&b.data, "data", envOr("USHER_DATA", "data/usher.db"), "bbolt data file (env USHER_DATA)")
	fs.StringVar(&b.endpoints, "etcd", envOr("USHER_ETCD", ""),
		"comma-separated etcd endpoints: keep the data in that cluster instead of a file, as one replica of many (env USHER_ETCD)")
	b.etcdFlags = addEtcdFlags(fs)
	fs.Uint64Var(&b.retain, "log-retention", 0,
		"change sets the change log keeps; older ones are compacted away (0: all; with --etcd, "+fmt.Sprint(etcd.DefaultRetain)+" when unset, "+
			"and each replica compacts the one log to its own value: give them all the same)")
	return b
}

// etcdRetain is the change sets an etcd log keeps: --log-retention, 0
// keeping them all as on a data file, or etcd.DefaultRetain when the flag
// is not given.
func (b *backendFlags) etcdRetain() authz.Revision {
	if !b.fs.Changed("log-retention") {
		return etcd.DefaultRetain
	}
	return authz.Revision(b.retain)
}

func addEtcdFlags(fs *pflag.FlagSet) *etcdFlags {
	e := &etcdFlags{}
	fs.StringVar(&e.prefix, "etcd-prefix", envOr("USHER_ETCD_PREFIX", "/usher/"), "the key prefix Usher's data lives under in etcd (env USHER_ETCD_PREFIX)")
	fs.StringVar(&e.ca, "etcd-ca", envOr("USHER_ETCD_CA", ""), "verify etcd's server certificates against this PEM CA bundle (env USHER_ETCD_CA)")
	fs.StringVar(&e.cert, "etcd-cert", envOr("USHER_ETCD_CERT", ""), "client certificate to present to etcd (env USHER_ETCD_CERT)")
	fs.StringVar(&e.key, "etcd-key", envOr("USHER_ETCD_KEY", ""), "the PEM key of --etcd-cert (env USHER_ETCD_KEY)")
	fs.StringVar(&e.user, "etcd-user", envOr("USHER_ETCD_USER", ""), "etcd user; its password comes from --etcd-password-file or USHER_ETCD_PASSWORD (env USHER_ETCD_USER)")
	fs.StringVar(&e.passwordFile, "etcd-password-file", envOr("USHER_ETCD_PASSWORD_FILE", ""), "file holding the etcd user's password (env USHER_ETCD_PASSWORD_FILE)")
	fs.IntVar(&e.maxTxnOps, "etcd-max-txn-ops", 128, "the cluster's --max-txn-ops: the most operations one etcd transaction may hold")
	fs.IntVar(&e.maxTxnBytes, "etcd-max-request-bytes", etcd.DefaultMaxTxnBytes, "the cluster's --max-request-bytes: the largest request, in bytes, one etcd transaction may be")
	return e
}

// client connects to the cluster at endpoints (comma-separated) and checks
// that it answers, so that a cluster out of reach fails a command at its
// start rather than at its first write.
func (e *etcdFlags) client(ctx context.Context, endpoints string) (*clientv3.Client, error) {
	// Below 1 the store would take its defaults, which are not what the
	// flag said the cluster takes.
	if e.maxTxnOps < 1 {
		return nil, fmt.Errorf("--etcd-max-txn-ops %d: must be at least 1, as the cluster's --max-txn-ops", e.maxTxnOps)
	}
	if e.maxTxnBytes < 1 {
		return nil, fmt.Errorf("--etcd-max-request-bytes %d: must be at least 1, as the cluster's --max-request-bytes", e.maxTxnBytes)
	}
	cfg := clientv3.Config{
		Endpoints:   strings.Split(endpoints, ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Room for the largest transaction the cluster takes, beyond the
		// client's default of 2 MiB.
		MaxCallSendMsgSize: max(2<<20, e.maxTxnBytes+64<<10),
	}
	if e.ca != "" || e.cert != "" {
		tlsInfo := transport.TLSInfo{TrustedCAFile: e.ca, CertFile: e.cert, KeyFile: e.key}
		tlsConfig, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tlsConfig
	}
	if e.user != "" {
		password := os.Getenv("USHER_ETCD_PASSWORD")
		if e.passwordFile != "" {
			raw, err := os.ReadFile(e.passwordFile)
			if err != nil {
				return nil, fmt.Errorf("--etcd-password-file: %w", err)
			}
			password = strings.TrimRight(string(raw), "\r\n")
		}
		cfg.Username, cfg.Password = e.user, password
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", endpoints, err)
	}
	reach, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Get(reach, e.prefix+"rev"); err != nil {
		cli.Close()
		return nil, fmt.Errorf("etcd %s: %w", endpoints, err)
	}
	return cli, nil
}

// openedBackend is a backend with what serve needs beside it.
type openedBackend struct {
	storage.Backend
	where  string              // for logs: "data/usher.db", "etcd 10.0.0.1:2379 /usher/"
	backup server.BackupSource // nil: Backup is unavailable
	close  func() error        // closes the backend and what it needs
	// etcd and prefix are the cluster's client and key prefix, in the etcd
	// mode: admission keeps its sessions there too.
	etcd   *clientv3.Client
	prefix string
	// gather is the engine's Options.Gather for this backend.
	gather time.Duration
}

// boltGather is how long the engine gathers writes for one bbolt
// transaction. Each transaction costs two fdatasyncs and the runtime's
// wake-ups around them whatever it carries; a steady 1,000 grants a second
// otherwise commits one or two at a time, and that cost then takes from the
// Checks served beside it. 2 ms gathers about three, at most 2 ms later.
const boltGather = 2 * time.Millisecond

func (b *backendFlags) open(ctx context.Context) (*openedBackend, error) {
	if b.endpoints == "" {
		store, err := bolt.Open(b.data, bolt.Options{Retain: authz.Revision(b.retain)})
		if err != nil {
			return nil, err
		}
		return &openedBackend{Backend: store, where: b.data, backup: store, close: store.Close, gather: boltGather}, nil
	}
	cli, err := b.client(ctx, b.endpoints)
	if err != nil {
		return nil, err
	}
	store := etcd.New(cli, etcd.Options{Prefix: b.prefix, MaxTxnOps: b.maxTxnOps, MaxTxnBytes: b.maxTxnBytes, Retain: b.etcdRetain()})
	return &openedBackend{
		Backend: store,
		where:   fmt.Sprintf("etcd %s %s", b.endpoints, b.prefix),
		etcd:    cli,
		prefix:  b.prefix,
		close: sync.OnceValue(func() error {
			store.Close()
			return cli.Close()
		}),
	}, nil
}
