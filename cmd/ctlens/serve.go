package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctlens/ctlens/api"
	"github.com/ctlens/ctlens/web"
)

// serveOptions are the flags of `ctlens serve`.
type serveOptions struct {
	addr, data, model, token, maxUpload, logLevel string
	workers, queue, maxFiles                      int
	retention, grace                              time.Duration
	maxVoxels                                     int64
}

func init() { rootCmd.AddCommand(newServeCmd()) }

// newServeCmd returns the `ctlens serve` command.
func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the REST API and the web UI",
		Long: `serve runs the REST API (see GET /api/v1/openapi.json) and the web UI on --addr. Uploaded
studies are scored by --workers workers; at most --queue jobs wait, and further submissions are
refused with 429 and Retry-After. Job states, results and uploads live under --data (SQLite database
ctlens.db and a folder per study) and survive a restart: jobs interrupted by a stop are queued again.
Studies older than --retention are deleted.

Every /api/ route needs "Authorization: Bearer <token>" when a token is set (--token or the
CTLENS_TOKEN environment variable); an --addr that is not a loopback address requires one.
SIGINT or SIGTERM stops the server: running jobs get --grace to finish, then go back to the queue.

The model is the bundled default unless --model names a checkpoint of ctlens train (then both are
offered, the checkpoint as the default). Results are not for clinical use.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Flags back to their defaults afterwards, for a command run
			// twice in one process (tests).
			defer cmd.Flags().VisitAll(func(f *pflag.Flag) {
				_ = f.Value.Set(f.DefValue)
				f.Changed = false
			})
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runServe(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address host:port (beyond loopback a token is required)")
	f.StringVar(&o.data, "data", "./ctlens-data", "data folder: database, uploads, results")
	f.StringVar(&o.model, "model", "", "checkpoint to serve as the default model (besides the bundled one)")
	f.IntVar(&o.workers, "workers", 2, "jobs scored at once")
	f.IntVar(&o.queue, "queue", 16, "jobs that may wait for a worker")
	f.StringVar(&o.token, "token", "", "bearer token for /api/ routes (default $CTLENS_TOKEN)")
	f.DurationVar(&o.retention, "retention", 168*time.Hour, "delete studies older than this (0 keeps them for ever)")
	f.StringVar(&o.maxUpload, "max-upload", "2GiB", "largest upload body (e.g. 512MiB, 2GiB)")
	f.IntVar(&o.maxFiles, "max-files", api.DefaultLimits().MaxFiles, "most files in one upload (zip entries included)")
	f.Int64Var(&o.maxVoxels, "max-voxels", api.DefaultLimits().MaxVoxels, "most voxels in one series")
	f.DurationVar(&o.grace, "grace", 30*time.Second, "time running jobs get to finish at shutdown before they are re-queued")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// parseSize reads a byte count: a whole number with an optional unit B,
// KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	mult := int64(1)
	for _, u := range units {
		if len(t) > len(u.suffix) && strings.EqualFold(t[len(t)-len(u.suffix):], u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive whole number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB)", s)
	}
	return n * mult, nil
}

// runServe serves until ctx ends, then shuts down gracefully.
func runServe(ctx context.Context, stdout, stderr io.Writer, o serveOptions) error {
	token := o.token
	if token == "" {
		token = os.Getenv("CTLENS_TOKEN")
	}
	if err := api.CheckListen(o.addr, token); err != nil {
		return err
	}
	maxUpload, err := parseSize(o.maxUpload)
	if err != nil {
		return fmt.Errorf("--max-upload: %w", err)
	}
	if o.workers < 1 || o.queue < 1 {
		return fmt.Errorf("--workers (%d) and --queue (%d) must be at least 1", o.workers, o.queue)
	}
	if o.maxFiles < 1 || o.maxVoxels < 1 {
		return fmt.Errorf("--max-files (%d) and --max-voxels (%d) must be at least 1", o.maxFiles, o.maxVoxels)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	scorer, err := newServeScorer(o.model)
	if err != nil {
		return err
	}
	retention := o.retention
	if retention == 0 {
		retention = -1 // keep for ever
	}
	lim := api.DefaultLimits()
	lim.MaxFiles, lim.MaxVoxels = o.maxFiles, o.maxVoxels
	lim.MaxZipBytes = max(lim.MaxZipBytes, 8*maxUpload)
	data, err := filepath.Abs(o.data)
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{
		DataDir:   data,
		Scorer:    scorer,
		Workers:   o.workers,
		QueueSize: o.queue,
		Token:     token,
		Retention: retention,
		MaxUpload: maxUpload,
		Limits:    lim,
		Grace:     o.grace,
		UI:        web.Handler(),
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), o.grace+15*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return err
	}
	fmt.Fprintf(stdout, "ctlens: serving on http://%s (data %s, %d workers, queue %d, model %s)\n",
		ln.Addr(), data, o.workers, o.queue, scorer.defaultName)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "ctlens: shutting down")
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.grace+15*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return errors.Join(serveErr, err)
	}
	return serveErr
}
