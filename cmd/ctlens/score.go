package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctlens/ctlens/score"
)

func init() { rootCmd.AddCommand(newScoreCmd()) }

// scoreResetFlags puts every flag of cmd back to its default, so that a command
// run twice in one process (as the tests do) starts from the defaults.
func scoreResetFlags(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		_ = f.Value.Set(f.DefValue)
		f.Changed = false
	})
}

// scoreLoadModel returns the checkpoint at path, or the bundled model when path
// is empty.
func scoreLoadModel(path string) (*score.Model, error) {
	if path == "" {
		return score.DefaultModel()
	}
	return score.LoadModel(path)
}

// scoreContext is cmd's context, cancelled on SIGINT and SIGTERM.
func scoreContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// newScoreCmd returns the `ctlens score` command.
func newScoreCmd() *cobra.Command {
	var (
		modelPath, heatDir, method string
		asJSON                     bool
	)
	cmd := &cobra.Command{
		Use:   "score PATH",
		Short: "Classify the CT series under a path (folder, zip, DICOM file, NIfTI) with class probabilities",
		Long: `score finds every CT series under PATH (a folder searched recursively, a .zip archive, a
single DICOM file or a .nii/.nii.gz volume), prepares each one with the model's own preprocessing
pipeline and prints the class probabilities, as a table or, with --json, as the result JSON of the
REST API. Files that are not CT images are listed as skipped; a series that cannot be read is
reported with its error and the others go on.

With --heatmap DIR, the predicted class of each series is explained by a class-activation heatmap
(--method gradcam, gradcampp or cam), written under DIR/<n>/ for the n-th series: heat.nii.gz (on
the scan's grid, with its geometry), montage.png, one overlay PNG per plane through the hottest
voxel and summary.json.

The model is the bundled default unless --model names a checkpoint of ctlens train. A 2D model
(ResNet-RS, ResFormer) scores every axial slice and aggregates the slice scores as its checkpoint
says; its heatmap stacks the slices' maps into a volume. Results are not for clinical use.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			defer scoreResetFlags(cmd)
			ctx, stop := scoreContext(cmd)
			defer stop()
			m, err := scoreLoadModel(modelPath)
			if err != nil {
				return err
			}
			if _, err := score.ParseMethod(method); err != nil {
				return err
			}
			res, err := score.ScorePath(ctx, args[0], score.Options{Model: m, Heatmap: heatDir != "", Method: method, OutDir: heatDir})
			if err != nil && (res == nil || !errors.Is(err, score.ErrNoSeries)) {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printScoreResult(w, res, heatDir)
			}
			if err != nil {
				return err
			}
			failed := 0
			for _, s := range res.Series {
				if s.Error != "" {
					failed++
				}
			}
			if failed == len(res.Series) {
				return fmt.Errorf("score: none of the %d series could be scored", failed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelPath, "model", "", "model checkpoint (default: the bundled model)")
	f.StringVar(&heatDir, "heatmap", "", "write heatmaps of the predicted class under this folder (DIR/<n>/ per series)")
	f.StringVar(&method, "method", "gradcam", "heatmap method: gradcam, gradcampp or cam")
	f.BoolVar(&asJSON, "json", false, "print the result JSON")
	return cmd
}

// printScoreResult writes res as a table: one row per series with the class
// probabilities and the prediction, then errors, warnings, skipped files
// and the model's caveat.
func printScoreResult(w io.Writer, res *score.Result, heatDir string) {
	mi := res.Model
	fmt.Fprintf(w, "model %s (%s, %s), classes %s\n", mi.Name, mi.Arch, mi.Version, strings.Join(mi.Classes, ", "))
	if len(res.Series) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		head := []string{"#", "SOURCE", "SERIES UID", "DIMS"}
		head = append(head, mi.Classes...)
		head = append(head, "PREDICTED")
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for i, s := range res.Series {
			uid := s.SeriesUID
			if uid == "" {
				uid = "-"
			}
			row := []string{fmt.Sprint(i), s.Source, uid, fmt.Sprintf("%dx%dx%d", s.Dims[0], s.Dims[1], s.Dims[2])}
			for _, c := range mi.Classes {
				if s.Error != "" {
					row = append(row, "-")
				} else {
					row = append(row, fmt.Sprintf("%.4f", s.Probabilities[c]))
				}
			}
			pred := s.Predicted
			if s.Error != "" {
				pred = "ERROR"
			}
			fmt.Fprintln(tw, strings.Join(append(row, pred), "\t"))
		}
		tw.Flush()
	}
	for i, s := range res.Series {
		if s.Error != "" {
			fmt.Fprintf(w, "series %d: error: %s\n", i, s.Error)
		}
		for _, x := range s.Warnings {
			fmt.Fprintf(w, "series %d: warning: %s\n", i, x)
		}
		if h := s.Heatmap; h != nil {
			share := "n/a"
			if h.LungShare != nil {
				share = fmt.Sprintf("%.0f%%", 100**h.LungShare)
			}
			fmt.Fprintf(w, "series %d: %s heatmap of %s: peak at voxel %v (%.1f, %.1f, %.1f) mm, %s of the heat in the lungs\n",
				i, h.Method, h.Class, h.PeakVoxel, h.PeakMM[0], h.PeakMM[1], h.PeakMM[2], share)
		}
	}
	if n := len(res.Skipped); n > 0 {
		fmt.Fprintf(w, "skipped %d file(s):\n", n)
		for i, k := range res.Skipped {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more\n", n-10)
				break
			}
			fmt.Fprintf(w, "  %s: %s\n", k.Path, k.Reason)
		}
	}
	if heatDir != "" && len(res.Series) > 0 {
		fmt.Fprintf(w, "heatmaps written under %s/<n>/ (%s, %s, overlays, %s)\n", heatDir, score.HeatFile, score.MontageFile, score.SummaryFile)
	}
	fmt.Fprintf(w, "%s\n", mi.Caveat)
}
