package main

import (
	"context"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/usher-authz/usher/authz"
	"github.com/usher-authz/usher/bench"
	"github.com/usher-authz/usher/storage/bolt"
)

// benchInProcessCommand builds the index from a data file as usher serve
// does and times Check on it in process, over as many distinct queries as the
// gRPC load replays and over a set small enough to stay in the CPU's cache.
func benchInProcessCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inprocess",
		Short: "Open a data file, build the index as usher serve does, and time Check in process",
		Long: `Inprocess opens a data file, builds the index from it as usher serve does,
reports how long that took, and times Check in process, without gRPC, over
--requests distinct queries drawn as 'usher bench check' draws them and over
the first --cached of them alone. --save-queries keeps the queries for
'usher bench check --queries' to replay against a server on the same file.`,
		Example: `  usher bench inprocess --data /tmp/bench/usher.db
  usher bench inprocess --data /tmp/bench/usher.db --save-queries /tmp/bench/queries.json`,
		Args: argsExactly(),
	}
	fs := cmd.Flags()
	data := fs.String("data", envOr("USHER_DATA", "data/usher.db"), "data file to read; no server may hold it (env USHER_DATA)")
	requests := fs.Int("requests", 30_000, "distinct queries, drawn as usher bench check draws them")
	cached := fs.Int("cached", 1024, "also time the first this many queries alone, which stay in the CPU's cache; 0 skips it")
	duration := fs.Duration("duration", 3*time.Second, "how long each timing calls Check")
	repeats := fs.Int("repeats", 3, "timings of each query set; the median is reported")
	seed := fs.Uint64("seed", 1, "seed of the query draw")
	save := fs.String("save-queries", "", "write the queries to this file, for usher bench check --queries")
	jsonPath := fs.String("json", "", "also write the results to this file, as JSON")
	cmd.RunE = func(*cobra.Command, []string) error {
		if *requests <= 0 {
			return usagef("--requests %d: want at least 1", *requests)
		}
		return benchInProcess(*data, *requests, *cached, *duration, *repeats, *seed, *save, *jsonPath)
	}
	return cmd
}

// benchInProcess times Check in process on the index of data.
func benchInProcess(data string, requests, cached int, duration time.Duration, repeats int, seed uint64, save, jsonPath string) error {
	info, err := os.Stat(data)
	if err != nil {
		return err
	}
	r := bench.InProcess{Data: data, FileBytes: info.Size()}
	start := time.Now()
	store, err := bolt.Open(data, bolt.Options{})
	if err != nil {
		return err
	}
	b := authz.NewBuilder(authz.SystemClock{})
	// A million grants are plenty to draw 30,000 queries from uniformly.
	sampler := &bench.Sampler{Sink: b, Keep: 1_000_000, Seed: seed}
	rev, err := store.Load(context.Background(), sampler)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	idx, err := b.Build(rev)
	if err != nil {
		return err
	}
	r.Load = bench.Seconds(time.Since(start))
	r.Resources, r.Grants, _ = idx.Counts()
	p := sampler.Platform()
	queries := bench.Queries(p, idx, requests, seed)
	if save != "" {
		if err := (bench.QueryFile{Resources: r.Resources, Grants: r.Grants, Queries: queries}).Save(save); err != nil {
			return err
		}
	}
	qs := make([]authz.Query, len(queries))
	for i, q := range queries {
		qs[i] = q.Query
	}
	sets := [][]authz.Query{qs}
	if cached > 0 && cached < len(qs) {
		sets = append(sets, qs[:cached])
	}
	for _, set := range sets {
		c, err := bench.TimeChecks(idx, set, duration, repeats)
		if err != nil {
			return err
		}
		r.Checks = append(r.Checks, c)
	}
	r.Print(os.Stdout)
	if jsonPath != "" {
		return r.WriteJSON(jsonPath)
	}
	return nil
}
