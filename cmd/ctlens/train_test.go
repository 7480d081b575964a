package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctlens/ctlens/train"
)

// runTrain executes a fresh `ctlens train` command with args.
func runTrain(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newTrainCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// A tiny CovidNet3D run on phantoms, then --resume of the finished run.
func TestTrainCommandPhantoms(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	args := []string{
		"--model", "covidnet3d-small",
		"--model-config", `{"width_stages":[8,8,8,8,8,8],"n_cell_stages":[1,1,1,1,1,1],"feature_mix":16,"first_width":8,"first_cell_width":8}`,
		"--input", "8x32x32", "--phantoms", "12", "--phantom-size", "32", "--phantom-slices", "8",
		"--epochs", "2", "--batch", "4", "--val-fraction", "0.25", "--test-phantoms", "3",
		"--optimizer", "adamw", "--wd", "0.01", "--class-weights", "balanced", "--ema", "0.9",
		"--workers", "2", "--no-progress", "--out", out,
	}
	text, err := runTrain(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for _, want := range []string{"classes: CP, NCP, Normal", "9 training, 3 validation, 3 test", "best epoch", "test (best epoch): accuracy"} {
		if !strings.Contains(text, want) {
			t.Fatalf("output lacks %q:\n%s", want, text)
		}
	}
	for _, f := range []string{train.BestFile, train.LastFile, train.StateFile, train.LogFile, train.CurvesFile, train.RecipeFile} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatal(err)
		}
	}
	saved, err := train.ReadRecipe(filepath.Join(out, train.RecipeFile))
	if err != nil {
		t.Fatal(err)
	}
	if saved.Model.Arch != "covidnet3d-small" || saved.Input != [3]int{8, 32, 32} || !saved.BalanceClasses || saved.EMADecay != 0.9 ||
		saved.Train.Phantoms != 12 || saved.Train.PhantomSeed != 1 || saved.Test.Phantoms != 3 || saved.Test.PhantomSeed == saved.Train.PhantomSeed {
		t.Fatalf("saved recipe %+v", saved)
	}
	before, err := train.ReadLog(filepath.Join(out, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	// Resuming a finished run trains nothing more and reports it again.
	text, err = runTrain(t, "--resume", "--no-progress", "--out", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	after, err := train.ReadLog(filepath.Join(out, train.LogFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 2 || after[1].Seconds != before[1].Seconds || !strings.Contains(text, "best epoch") {
		t.Fatalf("resume of a finished run changed the log (%d epochs) or printed:\n%s", len(after), text)
	}
	// Starting over in the same folder without --resume is refused.
	if _, err := runTrain(t, args...); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Fatalf("second run in the same folder: %v", err)
	}
}

// Flags given on the command line override the recipe file; others keep it.
func TestTrainCommandRecipeAndFlags(t *testing.T) {
	dir := t.TempDir()
	recipe := filepath.Join(dir, "recipe.json")
	if err := os.WriteFile(recipe, []byte(`{"model":{"arch":"covidnet3d-small","in_channels":1},"train":{"folder":"/data"},"lr":0.05,"epochs":9}`), 0o644); err != nil {
		t.Fatal(err)
	}
	text, err := runTrain(t, "--recipe", recipe, "--epochs", "4", "--class-weights", "1,2,0.5", "--print-recipe")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	var r train.Recipe
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if r.Epochs != 4 || r.LR != 0.05 || r.Train.Folder != "/data" || len(r.ClassWeights) != 3 || r.ClassWeights[2] != 0.5 {
		t.Fatalf("effective recipe %+v", r)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--input", "8x32", "--print-recipe"}, "--input"},
		{[]string{"--class-weights", "1,x", "--print-recipe"}, "--class-weights"},
		{[]string{"--model-config", "{", "--print-recipe"}, "--model-config"},
		{[]string{"--phantoms", "3", "--lr", "-1", "--out", filepath.Join(dir, "x")}, "lr -1"},
		{[]string{"--resume"}, "--resume needs --out"},
	} {
		if _, err := runTrain(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
