package main

import (
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ctlens/ctlens/net2d"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
)

// modelInfo is one row of `ctlens models`.
type modelInfo struct {
	Name        string     `json:"name"`
	Family      string     `json:"family"`
	Description string     `json:"description"`
	Dims        int        `json:"dims"` // 3 for volume models, 2 for slice models
	Spec        net3d.Spec `json:"spec"`
	Params      int        `json:"params"`
	SizeMB      float64    `json:"size_mb"`
	Input       []int      `json:"input,omitempty"`
	MACs        int64      `json:"macs,omitempty"`
}

// parseShape reads "1x1x32x128x128" (N×C×D×H×W).
func parseShape(s string) ([]int, error) {
	parts := strings.Split(strings.ToLower(s), "x")
	if len(parts) != 5 {
		return nil, fmt.Errorf("input shape %q: want N x C x D x H x W, e.g. 1x1x32x128x128", s)
	}
	out := make([]int, 5)
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 1 || v > 4096 {
			return nil, fmt.Errorf("input shape %q: dimension %d (%q) must be an integer in 1..4096", s, i, p)
		}
		out[i] = v
	}
	return out, nil
}

// describeModel2D builds the 2D architecture of e (with inChannels and
// classes when positive) without drawing weights and measures its size.
func describeModel2D(e net2d.Entry, inChannels, classes int) (modelInfo, error) {
	spec := e.DefaultSpec
	if inChannels > 0 {
		spec.InChannels = inChannels
	}
	if classes > 0 {
		spec.Classes = classes
	}
	m, err := net2d.BuildShapes(spec)
	if err != nil {
		return modelInfo{}, err
	}
	info := modelInfo{Name: e.Name, Family: e.Family, Description: e.Description, Dims: 2,
		Spec: net3d.Spec{Arch: spec.Arch, InChannels: spec.InChannels, Classes: spec.Classes, Config: spec.Config}, Params: nn.NumParams(m)}
	info.SizeMB = float64(info.Params) * 4 / (1 << 20)
	return info, nil
}

// describeModel builds the architecture of e (with inChannels and classes
// when positive) and measures its size and, when input is set, its MACs.
func describeModel(e net3d.Entry, inChannels, classes int, input []int) (modelInfo, error) {
	spec := e.DefaultSpec
	if inChannels > 0 {
		spec.InChannels = inChannels
	}
	if classes > 0 {
		spec.Classes = classes
	}
	m, err := net3d.BuildShapes(spec)
	if err != nil {
		return modelInfo{}, err
	}
	info := modelInfo{Name: e.Name, Family: e.Family, Description: e.Description, Dims: 3, Spec: spec, Params: nn.NumParams(m)}
	info.SizeMB = float64(info.Params) * 4 / (1 << 20)
	if input != nil {
		in := append([]int(nil), input...)
		in[1] = spec.InChannels
		nn.SetTraining(m, false)
		nn.SetRequiresGrad(m, false)
		x := tensor.Zeros(in...)
		var ferr error
		info.MACs = tensor.CountMACs(func() { _, ferr = nn.Run(m, x) })
		if ferr != nil {
			return modelInfo{}, fmt.Errorf("%s on input %v: %w", e.Name, in, ferr)
		}
		info.Input = in
	}
	return info, nil
}

func init() {
	var (
		input      string
		asJSON     bool
		inChannels int
		classes    int
		only       string
	)
	cmd := &cobra.Command{
		Use:   "models",
		Short: "List the registered model architectures with parameter counts, size and MACs",
		Long: `models lists every registered architecture — 3D volume models, then 2D slice models — with
its parameter count and size in MB (float32) for the given input channels and classes, and, with
--input, the multiply-accumulates of one forward pass of each 3D model on that input shape
(N x C x D x H x W; C is taken from --in-channels).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var shape []int
			if input != "" {
				var err error
				if shape, err = parseShape(input); err != nil {
					return err
				}
			}
			var rows []modelInfo
			for _, e := range net3d.Entries() {
				if only != "" && !strings.Contains(e.Name, only) && e.Family != only {
					continue
				}
				info, err := describeModel(e, inChannels, classes, shape)
				if err != nil {
					return err
				}
				rows = append(rows, info)
				debug.FreeOSMemory()
			}
			// Slice (2D) models have no MAC count for a volume input shape.
			for _, e := range net2d.Entries() {
				if shape != nil || (only != "" && !strings.Contains(e.Name, only) && e.Family != only) {
					continue
				}
				info, err := describeModel2D(e, inChannels, classes)
				if err != nil {
					return err
				}
				rows = append(rows, info)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			head := "NAME\tFAMILY\tIN\tCLASSES\tPARAMS\tSIZE MB"
			if shape != nil {
				head += "\tGMACs"
			}
			fmt.Fprintln(tw, head+"\tDESCRIPTION")
			for _, r := range rows {
				line := fmt.Sprintf("%s\t%s\t%d\t%d\t%d\t%.2f", r.Name, r.Family, r.Spec.InChannels, r.Spec.Classes, r.Params, r.SizeMB)
				if shape != nil {
					line += fmt.Sprintf("\t%.3f", float64(r.MACs)/1e9)
				}
				fmt.Fprintln(tw, line+"\t"+r.Description)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&input, "input", "", "input shape N x C x D x H x W for counting MACs, e.g. 1x1x32x128x128")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.IntVar(&inChannels, "in-channels", 0, "input channels (default: each architecture's default)")
	f.IntVar(&classes, "classes", 0, "number of classes (default: each architecture's default)")
	f.StringVar(&only, "family", "", "only architectures of this family or whose name contains this text")
	rootCmd.AddCommand(cmd)
}
