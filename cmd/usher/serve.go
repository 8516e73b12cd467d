package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/policy"
	"github.com/usher-authz/usher/server"
	"github.com/usher-authz/usher/storage"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", envOr("USHER_ADDR", "127.0.0.1:7070"), "address to listen on (env USHER_ADDR)")
	data := fs.String("data", envOr("USHER_DATA", "data/usher.db"), "bbolt data file (env USHER_DATA)")
	policyFile := fs.String("policy", envOr("USHER_POLICY", ""),
		"policy file or shipped policy name to apply at start-up (env USHER_POLICY); without it, an empty data file gets the default policy")
	drain := fs.Duration("drain", 10*time.Second, "how long in-flight calls may take to finish at shutdown")
	verbose := fs.Bool("v", false, "log every call at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	store, err := storage.Open(*data, storage.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	snap, err := store.Snapshot()
	if err != nil {
		return err
	}
	start := time.Now()
	idx, err := authz.NewIndex(snap)
	if err != nil {
		return fmt.Errorf("%s: %w", *data, err)
	}
	store.Watch(idx.Apply)
	engine := authz.NewEngine(idx, store)
	logger.Info("index loaded", "file", *data, "revision", snap.Revision,
		"resources", len(snap.Resources), "grants", len(snap.Grants), "took", time.Since(start).Round(time.Millisecond))

	if name := *policyFile; name != "" || snap.Revision == 0 {
		if name == "" {
			name = "default"
		}
		if err := applyPolicy(engine, name); err != nil {
			return err
		}
		logger.Info("policy applied", "policy", name, "revision", idx.Revision())
	}

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := server.New(engine, logger)
	fmt.Printf("usher: serving gRPC on %s (data %s, revision %d)\n", lis.Addr(), *data, idx.Revision())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return err
	case sig := <-stop:
		logger.Info("shutting down", "signal", sig.String())
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(*drain):
		srv.Stop()
	}
	return nil
}

func applyPolicy(engine *authz.Engine, name string) error {
	msg, err := policy.Load(name)
	if err != nil {
		return err
	}
	p := server.FromPolicy(msg)
	if err := server.ValidatePolicy(p); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if _, _, err := engine.ApplyPolicy(context.Background(), authz.Author{Caller: "usher serve --policy"}, p); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
