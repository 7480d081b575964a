package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/score"
)

func init() { rootCmd.AddCommand(newBatchCmd()) }

// batchConfig is what runBatch does.
type batchConfig struct {
	// Root is searched for series; Out is the results file (.csv or .jsonl).
	Root, Out string
	// Workers score series in parallel.
	Workers int
	// HeatDir, when set, receives the heatmaps, HeatDir/<key>/ per series.
	HeatDir, Method string
	Model           *score.Model
	Limits          dicomio.Limits
	// Progress receives the progress bar (nil: none).
	Progress io.Writer
	// scoreFn scores one input (score.ScoreInput when nil).
	scoreFn func(context.Context, *score.Input, score.Options) (score.SeriesResult, error)
}

// batchStats counts what runBatch did.
type batchStats struct {
	// Found is the number of series found, Done those already in the
	// results file, Scored those scored now (Errors of them with an error
	// row), Skipped the files that hold no series.
	Found, Done, Scored, Errors, Skipped int
}

// batchRow is one line of a JSON Lines results file: the row key, the
// model and the series result.
type batchRow struct {
	Key          string `json:"key"`
	Model        string `json:"model"`
	ModelVersion string `json:"model_version"`
	score.SeriesResult
}

// newBatchCmd returns the `ctlens batch` command.
func newBatchCmd() *cobra.Command {
	var (
		cfg       batchConfig
		modelPath string
		noBar     bool
	)
	cmd := &cobra.Command{
		Use:   "batch ROOT --out results.csv|results.jsonl",
		Short: "Score every CT series and NIfTI volume under a folder tree into a CSV or JSON Lines file, resumably",
		Long: `batch finds every CT series (DICOM files anywhere under ROOT, zip archives included; series are
grouped by SeriesInstanceUID whatever their folder) and every .nii/.nii.gz volume under ROOT, scores
them with --workers in parallel and appends one row per series to --out: CSV (a header, then
key, source, kind, series_uid, description, cols, rows, slices, predicted, p_<class>..., error, the
timings and the heatmap folder) or JSON Lines (one result object per line, as in the REST API's
result JSON, with "key" and "model").

Each row is flushed and synced to disk as soon as it is written. A rerun with the same --out skips
the series already in it (the key is the SeriesInstanceUID of a DICOM series, the path under ROOT
of a NIfTI file), so an interrupted run continues where it stopped; a series that cannot be read
gets a row with its error and is not retried. With --heatmaps DIR, the heatmap of each series'
predicted class is written under DIR/<key>/.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			defer scoreResetFlags(cmd)
			ctx, stop := scoreContext(cmd)
			defer stop()
			cfg.Root = args[0]
			if cfg.Out == "" {
				return errors.New("batch: --out is required (a .csv or .jsonl file)")
			}
			if cfg.Workers < 1 || cfg.Workers > 256 {
				return fmt.Errorf("batch: --workers %d outside 1..256", cfg.Workers)
			}
			if _, err := score.ParseMethod(cfg.Method); err != nil {
				return err
			}
			m, err := scoreLoadModel(modelPath)
			if err != nil {
				return err
			}
			cfg.Model = m
			cfg.Progress = nil
			if !noBar {
				cfg.Progress = cmd.ErrOrStderr()
			}
			st, err := runBatch(ctx, cfg)
			fmt.Fprintf(cmd.OutOrStdout(), "batch: %d series found, %d already in %s, %d scored now (%d with errors), %d files skipped\n",
				st.Found, st.Done, cfg.Out, st.Scored, st.Errors, st.Skipped)
			if err == nil {
				fmt.Fprintln(cmd.OutOrStdout(), m.Caveat)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Out, "out", "", "results file: .csv or .jsonl (appended to; rows already there are skipped)")
	f.IntVar(&cfg.Workers, "workers", min(4, runtime.GOMAXPROCS(0)), "series loaded and scored in parallel")
	f.StringVar(&cfg.HeatDir, "heatmaps", "", "write heatmaps of the predicted class under this folder (DIR/<key>/ per series)")
	f.StringVar(&cfg.Method, "method", "gradcam", "heatmap method: gradcam, gradcampp or cam")
	f.StringVar(&modelPath, "model", "", "model checkpoint (default: the bundled model)")
	f.BoolVar(&noBar, "no-progress", false, "no progress bar")
	return cmd
}

// batchFormat returns "csv" or "jsonl" from the file name.
func batchFormat(out string) (string, error) {
	switch strings.ToLower(filepath.Ext(out)) {
	case ".csv":
		return "csv", nil
	case ".jsonl", ".ndjson":
		return "jsonl", nil
	}
	return "", fmt.Errorf("batch: --out %s: want a .csv or .jsonl file", out)
}

// safeKey turns a row key into a folder name: characters other than
// letters, digits, '.', '-' and '_' become '_'.
func safeKey(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	s := string(b)
	if s == "" || s == "." || s == ".." {
		s = "_" + s
	}
	return s
}

// csvHeader returns the CSV columns for a model's classes.
func csvHeader(classes []string) []string {
	h := []string{"key", "source", "kind", "series_uid", "description", "cols", "rows", "slices", "predicted"}
	for _, c := range classes {
		h = append(h, "p_"+c)
	}
	return append(h, "error", "load_ms", "preprocess_ms", "infer_ms", "heatmap_ms", "heatmap_dir", "model", "model_version")
}

// oneLine replaces line breaks, so that every CSV record is one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

// csvRecord returns the CSV fields of a row.
func csvRecord(key string, m *score.Model, r score.SeriesResult, heatDir string) []string {
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	rec := []string{key, r.Source, r.Kind, r.SeriesUID, r.Description,
		strconv.Itoa(r.Dims[0]), strconv.Itoa(r.Dims[1]), strconv.Itoa(r.Dims[2]), r.Predicted}
	for _, c := range m.ClassNames {
		if p, ok := r.Probabilities[c]; ok {
			rec = append(rec, f(p))
		} else {
			rec = append(rec, "")
		}
	}
	rec = append(rec, r.Error, f(r.TimingsMS.Load), f(r.TimingsMS.Preprocess), f(r.TimingsMS.Infer), f(r.TimingsMS.Heatmap),
		heatDir, m.Name, m.Version)
	for i := range rec {
		rec[i] = oneLine(rec[i])
	}
	return rec
}

// readDone reads the keys of the rows in an existing results file. A last
// line without its newline (a write cut short) is removed from the file.
// A CSV file must have the header of this model's classes.
func readDone(path, format string, header []string) (map[string]bool, error) {
	done := map[string]bool{}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	if cut := bytes.LastIndexByte(data, '\n') + 1; cut < len(data) {
		if err := os.Truncate(path, int64(cut)); err != nil {
			return nil, fmt.Errorf("batch: %s: remove the incomplete last row: %w", path, err)
		}
		data = data[:cut]
	}
	lines := bytes.Split(data, []byte{'\n'})
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		switch format {
		case "jsonl":
			var row struct {
				Key *string `json:"key"`
			}
			if err := json.Unmarshal(line, &row); err != nil || row.Key == nil {
				return nil, fmt.Errorf("batch: %s line %d is not a ctlens batch row (%v): use another --out", path, i+1, err)
			}
			done[*row.Key] = true
		case "csv":
			rec, err := csv.NewReader(bytes.NewReader(line)).Read()
			if err != nil {
				return nil, fmt.Errorf("batch: %s line %d: %w", path, i+1, err)
			}
			if i == 0 {
				if strings.Join(rec, ",") != strings.Join(header, ",") {
					return nil, fmt.Errorf("batch: %s has columns %s, this model's are %s: use another --out", path, strings.Join(rec, ","), strings.Join(header, ","))
				}
				continue
			}
			done[rec[0]] = true
		}
	}
	return done, nil
}

// rowWriter appends rows to the results file, each synced to disk.
type rowWriter struct {
	f      *os.File
	format string
	model  *score.Model
}

func openRows(path, format string, m *score.Model, header []string) (*rowWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	w := &rowWriter{f: f, format: format, model: m}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("batch: %w", err)
	}
	if st.Size() == 0 {
		if format == "csv" {
			if err := w.write(header); err != nil {
				f.Close()
				return nil, err
			}
		}
		// Make the new file's name durable too.
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return w, nil
}

// write appends one CSV record or JSON value as one line and syncs it.
func (w *rowWriter) write(v any) error {
	var buf bytes.Buffer
	if rec, ok := v.([]string); ok {
		cw := csv.NewWriter(&buf)
		if err := cw.Write(rec); err != nil {
			return fmt.Errorf("batch: %w", err)
		}
		cw.Flush()
	} else {
		if err := json.NewEncoder(&buf).Encode(v); err != nil {
			return fmt.Errorf("batch: %w", err)
		}
	}
	if _, err := w.f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("batch: write %s: %w", w.f.Name(), err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("batch: sync %s: %w", w.f.Name(), err)
	}
	return nil
}

func (w *rowWriter) row(key string, r score.SeriesResult, heatDir string) error {
	if w.format == "csv" {
		return w.write(csvRecord(key, w.model, r, heatDir))
	}
	return w.write(batchRow{Key: key, Model: w.model.Name, ModelVersion: w.model.Version, SeriesResult: r})
}

// runBatch scores every series under cfg.Root that cfg.Out does not hold
// yet and appends their rows. Cancelling ctx stops it: series that were
// finished are written, those in progress are dropped (the next run
// scores them).
func runBatch(ctx context.Context, cfg batchConfig) (batchStats, error) {
	var st batchStats
	format, err := batchFormat(cfg.Out)
	if err != nil {
		return st, err
	}
	scoreFn := cfg.scoreFn
	if scoreFn == nil {
		scoreFn = score.ScoreInput
	}
	header := csvHeader(cfg.Model.ClassNames)
	done, err := readDone(cfg.Out, format, header)
	if err != nil {
		return st, err
	}
	ins, err := score.Find(cfg.Root, cfg.Limits)
	if err != nil {
		return st, fmt.Errorf("batch: %w", err)
	}
	defer ins.Close()
	st.Found, st.Skipped = len(ins.Items), len(ins.Skipped)
	var todo []*score.Input
	for _, in := range ins.Items {
		if done[in.Key] {
			st.Done++
		} else {
			todo = append(todo, in)
		}
	}
	w, err := openRows(cfg.Out, format, cfg.Model, header)
	if err != nil {
		return st, err
	}
	defer w.f.Close()
	if len(todo) == 0 {
		return st, w.f.Close()
	}
	var bar *progressbar.ProgressBar
	if cfg.Progress != nil {
		bar = progressbar.NewOptions(len(todo),
			progressbar.OptionSetWriter(cfg.Progress),
			progressbar.OptionSetDescription("scoring"),
			progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(),
			progressbar.OptionSetItsString("series"),
			progressbar.OptionShowIts(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(cfg.Progress) }),
		)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type scored struct {
		in      *score.Input
		r       score.SeriesResult
		heatDir string
	}
	jobs := make(chan *score.Input)
	results := make(chan scored)
	var wg sync.WaitGroup
	for i := 0; i < min(cfg.Workers, len(todo)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for in := range jobs {
				o := score.Options{Model: cfg.Model, Method: cfg.Method, Limits: cfg.Limits}
				hd := ""
				if cfg.HeatDir != "" {
					hd = filepath.Join(cfg.HeatDir, safeKey(in.Key))
					o.Heatmap, o.OutDir = true, hd
				}
				r, err := scoreFn(ctx, in, o)
				if err != nil && ctx.Err() != nil {
					continue // cancelled: not done, the next run scores it
				}
				if r.Heatmap == nil {
					hd = ""
				}
				results <- scored{in, r, hd}
			}
		}()
	}
	go func() {
	feed:
		for _, in := range todo {
			select {
			case jobs <- in:
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	// Every finished series is written, also after a cancellation.
	var werr error
	for s := range results {
		if werr != nil {
			continue // drain
		}
		if werr = w.row(s.in.Key, s.r, s.heatDir); werr != nil {
			cancel()
			continue
		}
		st.Scored++
		if s.r.Error != "" {
			st.Errors++
		}
		if bar != nil {
			_ = bar.Add(1)
		}
	}
	if werr != nil {
		return st, werr
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("batch: interrupted after %d of %d series (%w); run again with the same --out to continue", st.Done+st.Scored, st.Found, err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return st, w.f.Close()
}
