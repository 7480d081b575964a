package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/score"
	"github.com/ctlens/ctlens/volume"
)

// batchChildEnv, when set, makes TestBatchChildProcess run ctlens with the
// JSON array of arguments it holds and exit (the process the batch test
// kills); otherwise that test does nothing.
const batchChildEnv = "CTLENS_BATCH_CHILD_ARGS"

func TestBatchChildProcess(t *testing.T) {
	raw := os.Getenv(batchChildEnv)
	if raw == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rootCmd.SetArgs(args)
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// batchTree writes 48 DICOM series (in <class>/P<n>/S1 folders, plus a
// second series beside the first in one folder) and 2 NIfTI volumes
// under root, with a text file, and returns the row keys expected.
func batchTree(t *testing.T, root string) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := volume.PhantomClass(i % 3)
			p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: uint64(100 + i), Cols: 32, Slices: 20})
			if err != nil {
				errs <- err
				return
			}
			if i >= 48 {
				name := fmt.Sprintf("nifti/scan_%d.nii.gz", i)
				errs <- dicomio.WriteNIfTI(filepath.Join(root, name), p.CT, dicomio.NIfTIInt16)
				mu.Lock()
				keys[name] = true
				mu.Unlock()
				return
			}
			dir := filepath.Join(root, c.String(), fmt.Sprintf("P%03d", i), "S1")
			if i == 47 { // written aside, then moved beside series 46
				dir = filepath.Join(dir, "..", "..", "tmp47")
			}
			uid := fmt.Sprintf("1.2.826.0.1.3680043.9.8.%d", i)
			files, err := dicomio.WriteSeries(dir, p.CT, dicomio.WriteOptions{
				Seed: uint64(i), SeriesUID: uid, PatientName: "ROE^RICHARD", PatientID: "MRN-778899",
				SeriesNumber: 1 + i/47, SeriesDescription: "chest " + strconv.Itoa(i),
			})
			if i == 47 && err == nil {
				dst := filepath.Join(root, volume.PhantomClass(46%3).String(), "P046", "S1")
				err = os.MkdirAll(dst, 0o755)
				for k, f := range files {
					if err == nil {
						err = os.Rename(f, filepath.Join(dst, fmt.Sprintf("B%04d.dcm", k+1)))
					}
				}
				if err == nil {
					err = os.Remove(dir)
				}
			}
			errs <- err
			mu.Lock()
			keys[uid] = true
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "README.txt"), []byte("not a scan"), 0o644); err != nil {
		t.Fatal(err)
	}
	return keys
}

// csvKeys returns the key column of a results CSV (without the header).
func csvKeys(t *testing.T, path string) ([]string, [][]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range recs[1:] {
		keys = append(keys, r[0])
	}
	return keys, recs
}

// jsonlRows reads the rows of a JSON Lines results file.
func jsonlRows(t *testing.T, path string) []batchRow {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []batchRow
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'}) {
		var r batchRow
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%s line %d: %v", path, i+1, err)
		}
		rows = append(rows, r)
	}
	return rows
}

// checkComplete fails unless keys holds every expected key exactly once.
func checkComplete(t *testing.T, keys []string, want map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	for _, k := range keys {
		seen[k]++
		if seen[k] > 1 {
			t.Errorf("key %s written twice", k)
		}
		if !want[k] {
			t.Errorf("unexpected key %s", k)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d distinct keys, want %d", len(seen), len(want))
	}
}

func TestBatch(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "tree")
	t0 := time.Now()
	want := batchTree(t, root)
	ckpt := scCheckpoint(t, dir)
	t.Logf("fixture: %d series in %v", len(want), time.Since(t0))
	m, err := score.LoadModel(ckpt)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("cancel and resume", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "results.csv")
		var mu sync.Mutex
		var calls []string
		ok := map[string]bool{}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		counting := func(stopAfter int) func(context.Context, *score.Input, score.Options) (score.SeriesResult, error) {
			return func(ctx context.Context, in *score.Input, o score.Options) (score.SeriesResult, error) {
				r, err := score.ScoreInput(ctx, in, o)
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, in.Key)
				if err == nil {
					ok[in.Key] = true
				}
				if len(calls) == stopAfter {
					cancel()
				}
				return r, err
			}
		}
		cfg := batchConfig{Root: root, Out: out, Workers: 3, Model: m, scoreFn: counting(15)}
		st, err := runBatch(ctx, cfg)
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "run again") {
			t.Fatalf("cancelled run: %v", err)
		}
		keys1, _ := csvKeys(t, out)
		first, _ := os.ReadFile(out)
		// Every series finished before the cancellation is in the file.
		if len(keys1) != len(ok) || st.Scored != len(keys1) || len(keys1) < 15 || len(keys1) >= 50 {
			t.Fatalf("after cancel: %d rows, %d finished, stats %+v", len(keys1), len(ok), st)
		}
		for _, k := range keys1 {
			if !ok[k] {
				t.Errorf("row %s was not finished", k)
			}
		}

		t.Logf("cancelled after %d scoring calls with %d rows written", len(calls), len(keys1))
		calls = nil
		cfg.scoreFn = counting(-1)
		st, err = runBatch(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range calls {
			for _, d := range keys1 {
				if k == d {
					t.Errorf("series %s scored again", k)
				}
			}
		}
		if len(calls) != 50-len(keys1) || st.Done != len(keys1) || st.Scored != 50-len(keys1) || st.Found != 50 || st.Skipped != 1 || st.Errors != 0 {
			t.Errorf("resume: %d calls, stats %+v (first run wrote %d)", len(calls), st, len(keys1))
		}
		final, _ := os.ReadFile(out)
		if !bytes.HasPrefix(final, first) {
			t.Error("the resumed run changed the rows already written")
		}
		keys, recs := csvKeys(t, out)
		checkComplete(t, keys, want)
		if strings.Join(recs[0], ",") != strings.Join(csvHeader(m.ClassNames), ",") {
			t.Errorf("header %v", recs[0])
		}
		for _, r := range recs[1:] {
			p := 0.0
			for _, f := range r[9:12] {
				x, err := strconv.ParseFloat(f, 64)
				if err != nil {
					t.Fatalf("row %v: %v", r, err)
				}
				p += x
			}
			if p < 1-1e-9 || p > 1+1e-9 || r[12] != "" || r[8] == "" {
				t.Errorf("row %v: probabilities sum to %v", r, p)
			}
		}
		if bytes.Contains(final, []byte("ROE")) || bytes.Contains(final, []byte("778899")) {
			t.Error("results show patient data")
		}

		calls = nil
		st, err = runBatch(context.Background(), cfg)
		if err != nil || len(calls) != 0 || st.Done != 50 {
			t.Errorf("third run: %v, %d calls, %+v", err, len(calls), st)
		}
	})

	t.Run("killed process", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "results.jsonl")
		args, _ := json.Marshal([]string{"batch", root, "--out", out, "--model", ckpt, "--workers", "1", "--no-progress"})
		cmd := exec.Command(os.Args[0], "-test.run=^TestBatchChildProcess$")
		cmd.Env = append(os.Environ(), batchChildEnv+"="+string(args))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			b, _ := os.ReadFile(out)
			if bytes.Count(b, []byte{'\n'}) >= 10 {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("child wrote no rows in 60 s: %s", stderr.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		first, _ := os.ReadFile(out)
		n1 := bytes.Count(first, []byte{'\n'})
		if n1 >= 50 {
			t.Fatalf("the child finished all %d rows before it was killed", n1)
		}
		// Simulate a write cut short by the kill: a partial last row.
		complete := first[:bytes.LastIndexByte(first, '\n')+1]
		torn := append(append([]byte(nil), complete...), []byte(`{"key":"1.2.826.0.1.3680043.9.8.99","model":"sm`)...)
		if err := os.WriteFile(out, torn, 0o644); err != nil {
			t.Fatal(err)
		}
		heat := filepath.Join(t.TempDir(), "heat")
		text, err := run(t, "batch", root, "--out", out, "--model", ckpt, "--workers", "2", "--heatmaps", heat, "--no-progress")
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		done := bytes.Count(complete, []byte{'\n'})
		t.Logf("killed after %d rows", done)
		if !strings.Contains(text, fmt.Sprintf("batch: 50 series found, %d already in %s, %d scored now (0 with errors), 1 files skipped", done, out, 50-done)) {
			t.Errorf("output %q (rows before: %d)", text, done)
		}
		final, _ := os.ReadFile(out)
		if !bytes.HasPrefix(final, complete) {
			t.Error("the resumed run changed the rows already written")
		}
		rows := jsonlRows(t, out)
		var keys []string
		for i, r := range rows {
			keys = append(keys, r.Key)
			if r.Error != "" || r.Model != "small" || len(r.Probabilities) != 3 {
				t.Errorf("row %d: %+v", i, r)
			}
			// Rows of the second run have heatmaps, written under heat/<key>/.
			if i >= done {
				if r.Heatmap == nil {
					t.Errorf("row %d (%s) has no heatmap", i, r.Key)
					continue
				}
				if _, err := dicomio.ReadNIfTI(filepath.Join(heat, safeKey(r.Key), score.HeatFile), dicomio.Limits{}); err != nil {
					t.Errorf("row %d: %v", i, err)
				}
			}
			if r.Kind == score.KindNIfTI && r.Key != r.Source {
				t.Errorf("NIfTI row key %q, source %q", r.Key, r.Source)
			}
		}
		checkComplete(t, keys, want)
	})

	t.Run("bad arguments", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"batch", root, "--model", ckpt}, "--out is required"},
			{[]string{"batch", root, "--model", ckpt, "--out", filepath.Join(dir, "r.txt")}, "want a .csv or .jsonl file"},
			{[]string{"batch", root, "--model", ckpt, "--out", filepath.Join(dir, "r.csv"), "--workers", "0"}, "--workers 0"},
			{[]string{"batch", filepath.Join(dir, "nowhere"), "--model", ckpt, "--out", filepath.Join(dir, "r.csv")}, "nowhere"},
		} {
			if _, err := run(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: error %v, want %q", c.args, err, c.want)
			}
		}
		// A CSV written for other classes is not appended to.
		other := filepath.Join(dir, "other.csv")
		if err := os.WriteFile(other, []byte("key,source,kind\nx,y,z\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := run(t, "batch", root, "--model", ckpt, "--out", other); err == nil || !strings.Contains(err.Error(), "use another --out") {
			t.Errorf("foreign CSV: %v", err)
		}
	})
}
