package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctlens/ctlens/dicomio"
	"github.com/ctlens/ctlens/volume"
)

// synthEntry describes one written phantom in manifest.json.
type synthEntry struct {
	Class   string `json:"class"`
	Patient string `json:"patient"`
	Scan    string `json:"scan"`
	Path    string `json:"path"`   // the series folder or NIfTI file, relative to the output root
	Lesion  string `json:"lesion"` // the lesion mask (NIfTI), relative to the output root
	Seed    uint64 `json:"seed"`
	Slices  int    `json:"slices"`
}

func init() {
	var (
		out        string
		n          int
		seed       uint64
		size       int
		format     string
		classNames string
	)
	cmd := &cobra.Command{
		Use:   "synth --out DIR",
		Short: "Write synthetic chest-CT phantoms (CP, NCP, Normal) with lesion masks",
		Long: `synth writes synthetic chest CT scans in the CovidNet3D dataset layout:
DIR/<class>/<patient>/<scan>/IM0001.dcm ... (format dicom) or DIR/<class>/<patient>_<scan>.nii.gz
(format nifti), each with a NIfTI lesion mask, plus DIR/dataset.json ({class: {patient: {scan: [slices]}}})
and DIR/manifest.json. Classes cycle in turn, so the set is balanced. The same --seed gives the same scans;
use different seeds for training and held-out sets. The phantoms are synthetic and not clinical data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("synth: --out is required")
			}
			if n < 1 || n > 100000 {
				return fmt.Errorf("synth: --n %d outside 1..100000", n)
			}
			if format != "dicom" && format != "nifti" {
				return fmt.Errorf("synth: --format %q: want dicom or nifti", format)
			}
			var classes []volume.PhantomClass
			for _, name := range strings.Split(classNames, ",") {
				c, err := volume.ParsePhantomClass(strings.TrimSpace(name))
				if err != nil {
					return fmt.Errorf("synth: %w", err)
				}
				classes = append(classes, c)
			}
			layout := map[string]map[string]map[string][]string{}
			var manifest []synthEntry
			for i := 0; i < n; i++ {
				c := classes[i%len(classes)]
				s := seed*1_000_003 + uint64(i)
				p, err := volume.NewPhantom(volume.PhantomOptions{Class: c, Seed: s, Cols: size})
				if err != nil {
					return fmt.Errorf("synth: phantom %d: %w", i, err)
				}
				patient := fmt.Sprintf("P%05d", i)
				scan := "S1"
				e := synthEntry{Class: c.String(), Patient: patient, Scan: scan, Seed: s, Slices: p.CT.Dims[2]}
				var slices []string
				switch format {
				case "dicom":
					dir := filepath.Join(out, c.String(), patient, scan)
					paths, err := dicomio.WriteSeries(dir, p.CT, dicomio.WriteOptions{
						Seed: s, PatientID: patient, PatientName: "PHANTOM^" + patient,
						SeriesDescription: "synthetic chest CT (" + c.String() + ")",
					})
					if err != nil {
						return fmt.Errorf("synth: %w", err)
					}
					for _, pth := range paths {
						slices = append(slices, filepath.Base(pth))
					}
					e.Path = filepath.Join(c.String(), patient, scan)
					e.Lesion = filepath.Join(c.String(), patient, scan+".lesion.nii.gz")
				case "nifti":
					name := patient + "_" + scan + ".nii.gz"
					if err := dicomio.WriteNIfTI(filepath.Join(out, c.String(), name), p.CT, dicomio.NIfTIInt16); err != nil {
						return fmt.Errorf("synth: %w", err)
					}
					slices = []string{name}
					e.Path = filepath.Join(c.String(), name)
					e.Lesion = filepath.Join(c.String(), patient+"_"+scan+".lesion.nii.gz")
				}
				if err := dicomio.WriteNIfTI(filepath.Join(out, e.Lesion), p.Lesion, dicomio.NIfTIUint8); err != nil {
					return fmt.Errorf("synth: %w", err)
				}
				if layout[e.Class] == nil {
					layout[e.Class] = map[string]map[string][]string{}
				}
				layout[e.Class][patient] = map[string][]string{scan: slices}
				manifest = append(manifest, e)
				fmt.Fprintf(cmd.ErrOrStderr(), "\rsynth: %d/%d", i+1, n)
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			for name, v := range map[string]any{"dataset.json": layout, "manifest.json": manifest} {
				b, err := json.MarshalIndent(v, "", " ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
					return fmt.Errorf("synth: %w", err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d synthetic scans to %s (synthetic data, not for clinical use)\n", n, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "output folder")
	f.IntVar(&n, "n", 30, "number of scans")
	f.Uint64Var(&seed, "seed", 1, "random seed (scans are reproducible from it)")
	f.IntVar(&size, "size", 128, "in-plane size in pixels")
	f.StringVar(&format, "format", "dicom", "dicom (one series folder per scan) or nifti (one .nii.gz per scan)")
	f.StringVar(&classNames, "classes", strings.Join(volume.PhantomClassNames, ","), "comma-separated classes to draw, in turn")
	rootCmd.AddCommand(cmd)
}
