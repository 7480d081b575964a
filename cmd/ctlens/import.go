package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
)

func init() {
	var (
		arch, config, out, classNames string
		inChannels, classes           int
		sumRGB, newClassifier, strict bool
		seed                          uint64
	)
	cmd := &cobra.Command{
		Use:   "import STATE_DICT.safetensors --arch NAME --out MODEL.safetensors",
		Short: "Convert a PyTorch state dict into a ctlens checkpoint",
		Long: `import loads a PyTorch state dict (exported to safetensors with
tools/export_safetensors.py) into a registered architecture and writes a ctlens
checkpoint that carries the architecture spec. --sum-rgb adapts a 3-channel stem
to --in-channels 1 by summing over RGB; --new-classifier keeps a fresh final
layer when --classes differs from the checkpoint's. Missing, unexpected and
mis-shaped keys are reported by name (and fail with --strict).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if arch == "" || out == "" {
				return fmt.Errorf("import: --arch and --out are required")
			}
			e, ok := net3d.Lookup(arch)
			if !ok {
				return fmt.Errorf("import: unknown architecture %q (see `ctlens models`)", arch)
			}
			spec := e.DefaultSpec
			if inChannels > 0 {
				spec.InChannels = inChannels
			}
			if classes > 0 {
				spec.Classes = classes
			}
			if config != "" {
				if !json.Valid([]byte(config)) {
					return fmt.Errorf("import: --config is not valid JSON: %s", config)
				}
				spec.Config = json.RawMessage(config)
			}
			state, _, err := nn.ReadTensors(args[0])
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			c, rep, err := net3d.Import(state, spec, seed, net3d.ImportOpts{SumRGB: sumRGB, NewClassifier: newClassifier, Strict: strict})
			if err != nil {
				return fmt.Errorf("import %s as %s: %w", args[0], arch, err)
			}
			meta := map[string]string{net3d.MetaSource: filepath.Base(args[0])}
			if classNames != "" {
				names := strings.Split(classNames, ",")
				if len(names) != spec.Classes {
					return fmt.Errorf("import: %d class names for %d classes", len(names), spec.Classes)
				}
				b, _ := json.Marshal(names)
				meta[net3d.MetaClassNames] = string(b)
			}
			if err := net3d.SaveCheckpoint(out, c, meta); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "imported %d tensors into %s (%d parameters) -> %s\n", rep.Loaded, arch, rep.Parameters, out)
			for _, k := range rep.SummedRGB {
				fmt.Fprintf(w, "  summed over RGB: %s\n", k)
			}
			for _, k := range rep.Replaced {
				fmt.Fprintf(w, "  new classifier (not loaded): %s\n", k)
			}
			for _, k := range rep.Missing {
				fmt.Fprintf(w, "  missing in checkpoint (fresh init): %s\n", k)
			}
			for _, k := range rep.Unexpected {
				fmt.Fprintf(w, "  unused checkpoint key: %s\n", k)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&arch, "arch", "", "registered architecture (see `ctlens models`)")
	f.StringVar(&config, "config", "", "architecture config JSON (family-specific)")
	f.StringVar(&out, "out", "", "output checkpoint path (.safetensors)")
	f.IntVar(&inChannels, "in-channels", 0, "input channels of the imported model")
	f.IntVar(&classes, "classes", 0, "classes of the imported model")
	f.StringVar(&classNames, "class-names", "", "comma-separated class names by label")
	f.BoolVar(&sumRGB, "sum-rgb", false, "sum a 3-channel stem over RGB for a 1-channel model")
	f.BoolVar(&newClassifier, "new-classifier", false, "keep a fresh classifier when the class count differs")
	f.BoolVar(&strict, "strict", false, "fail on missing or unexpected keys")
	f.Uint64Var(&seed, "seed", 1, "seed for freshly initialised tensors")
	rootCmd.AddCommand(cmd)
}
