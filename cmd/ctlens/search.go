package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctlens/ctlens/nas"
	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/train"
	"github.com/ctlens/ctlens/volume"
)

// RandomFile is the architecture `ctlens search --random-like` writes.
const RandomFile = "random.json"

// searchFlags holds the values of `ctlens search` flags; only flags given
// on the command line override the configuration.
type searchFlags struct {
	config, out                                  string
	supernet, supernetConfig, input, pipeline    string
	inChannels, classes                          int
	data, layout, root                           string
	phantoms, phantomSize, phantomSlices         int
	phantomSeed                                  uint64
	mode                                         string
	epochs, batch, steps, warmup                 int
	tauStart, tauEnd, tauDecay                   float64
	tauPerStep, quiet                            bool
	archLR, archWD, archBeta1, archBeta2, lr, wd float64
	clip, maxMB, maxMMACs, costWeight            float64
	costMetric, randomLike                       string
	randomTries                                  int
	seed                                         uint64
	flagSet                                      *pflag.FlagSet
	printOnly                                    bool
}

func init() { rootCmd.AddCommand(newSearchCmd()) }

// newSearchCmd returns the `ctlens search` command.
func newSearchCmd() *cobra.Command {
	var sf searchFlags
	cmd := &cobra.Command{
		Use:   "search",
		Short: "Search the CovidNet3D space for an architecture (Gumbel-softmax NAS)",
		Long: `search runs the CovidNet3D architecture search on a supernet (covidnet3d-small by default)
with a straight-through Gumbel-softmax per cell (--mode hard), a soft relaxation (--mode soft), or
uniform random single paths with the architecture never updated (--mode random: what the released
CovidNet3D code effectively does). The training data (--phantoms N, --data or --layout) is split
50/50: weights learn on one half, the architecture logits on the other.

A size term asks for a smaller model: --max-mb M (or --max-mmacs) adds
cost-weight·max(0, E[size]/M − 1) to the architecture loss while the argmax architecture is over
M, and keeps the derived architecture under M; --cost-weight alone adds cost-weight·E[size]
(E over softmax(α), cost per --cost-metric).

The output folder receives after every epoch arch_epoch_NNN.json (the argmax architecture as a
net3d spec) and a line of alpha.jsonl; at the end final.json (train it with
ctlens train --arch final.json), final_nni.json (the reference's NNI format), costs.json and
search.json.

With --random-like SPEC no search runs: a random architecture of the space of SPEC with the size
closest to SPEC's (of --random-tries uniform draws) is written to --out/random.json, for comparison.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sf.flagSet = cmd.Flags()
			if sf.randomLike != "" {
				return sf.runRandomLike(cmd.OutOrStdout())
			}
			c, err := sf.toConfig()
			if err != nil {
				return err
			}
			if sf.printOnly {
				b, err := json.MarshalIndent(c, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var progress io.Writer = cmd.ErrOrStderr()
			if sf.quiet {
				progress = nil
			}
			res, err := nas.Run(ctx, c, progress)
			if errors.Is(err, context.Canceled) {
				return fmt.Errorf("search: interrupted; the specs of finished epochs are in %s", c.Out)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "architecture: %s\n", strings.Join(res.Ops, ", "))
			fmt.Fprintf(out, "size %.4f MB (%d parameters), %.2f MMACs at input %dx%dx%d\n", res.SizeMB, res.Params, res.MMACs, c.Input[0], c.Input[1], c.Input[2])
			fmt.Fprintf(out, "wrote %s, %s, %s and arch_epoch_NNN.json per epoch in %s\n", nas.FinalFile, nas.FinalNNIFile, nas.AlphaFile, c.Out)
			fmt.Fprintf(out, "train it: ctlens train --arch %s ...\n", filepath.Join(c.Out, nas.FinalFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sf.config, "config", "", "JSON search configuration (flags given override its fields)")
	f.BoolVar(&sf.printOnly, "print-config", false, "print the effective configuration as JSON and exit")
	f.StringVar(&sf.out, "out", "", "output folder (default \"search\")")
	f.BoolVar(&sf.quiet, "quiet", false, "no per-epoch progress lines")

	f.StringVar(&sf.supernet, "supernet", "", "search space: covidnet3d or covidnet3d-small (default)")
	f.StringVar(&sf.supernetConfig, "supernet-config", "", "supernet options as inline JSON or a file, e.g. '{\"width_stages\":[16,24,32,48,64,96]}'")
	f.IntVar(&sf.inChannels, "in-channels", 0, "input channels (default 1)")
	f.IntVar(&sf.classes, "classes", 0, "number of classes (default: the data's)")
	f.StringVar(&sf.input, "input", "", "network input size DEPTHxHEIGHTxWIDTH (default 16x64x64)")
	f.StringVar(&sf.pipeline, "pipeline", "", "preprocessing pipeline: a JSON file or inline JSON array of ops (default: CovidNet3D for --input)")

	f.StringVar(&sf.data, "data", "", "data: folder with one sub-folder per class")
	f.StringVar(&sf.layout, "layout", "", "data: CovidNet3D JSON layout {class: {patient: {scan: [slices]}}}")
	f.StringVar(&sf.root, "root", "", "folder the --layout scans lie under (default: the JSON's folder)")
	f.IntVar(&sf.phantoms, "phantoms", 0, "data: N synthetic phantoms (CP, NCP, Normal in turn)")
	f.Uint64Var(&sf.phantomSeed, "phantom-seed", 0, "seed of the phantoms (default: --seed)")
	f.IntVar(&sf.phantomSize, "phantom-size", 0, "phantom in-plane size in pixels (default 128)")
	f.IntVar(&sf.phantomSlices, "phantom-slices", 0, "phantom slices (default: by slice spacing, 40–72)")

	f.StringVar(&sf.mode, "mode", "", "hard (straight-through Gumbel-softmax, default), soft, or random (uniform single path, α fixed)")
	f.IntVar(&sf.epochs, "epochs", 0, "epochs (default 10)")
	f.IntVar(&sf.batch, "batch", 0, "scans per step and half (default 4)")
	f.IntVar(&sf.steps, "steps", 0, "steps per epoch (default: the smaller half / batch)")
	f.IntVar(&sf.warmup, "warmup-epochs", 0, "first epochs that train only the weights, α fixed")
	f.Float64Var(&sf.tauStart, "tau-start", 0, "Gumbel-softmax temperature at the start (default 1)")
	f.Float64Var(&sf.tauEnd, "tau-end", 0, "lowest temperature (default: --tau-start)")
	f.Float64Var(&sf.tauDecay, "tau-decay", 0, "temperature factor per epoch (or step): τ = max(end, start·decay^t) (default 1)")
	f.BoolVar(&sf.tauPerStep, "tau-per-step", false, "decay the temperature every step instead of every epoch")
	f.Float64Var(&sf.archLR, "arch-lr", 0, "Adam learning rate of α (default 3e-4)")
	f.Float64Var(&sf.archWD, "arch-wd", 0, "Adam weight decay of α (default 1e-3)")
	f.Float64Var(&sf.archBeta1, "arch-beta1", 0, "Adam β1 of α (default 0.5)")
	f.Float64Var(&sf.archBeta2, "arch-beta2", 0, "Adam β2 of α (default 0.999)")
	f.Float64Var(&sf.lr, "lr", 0, "Adam learning rate of the weights (default 1e-3)")
	f.Float64Var(&sf.wd, "wd", 0, "Adam weight decay of the weights (default 5e-4)")
	f.Float64Var(&sf.clip, "clip", 0, "clip the weights' gradient norm (default 5; 0 off)")
	f.Float64Var(&sf.maxMB, "max-mb", 0, "size budget in MB (params·4/1024²): penalty and a derived model under it")
	f.Float64Var(&sf.maxMMACs, "max-mmacs", 0, "budget in millions of MACs per scan at --input")
	f.Float64Var(&sf.costWeight, "cost-weight", 0, "weight λ of the resource term (default 1 with a budget)")
	f.StringVar(&sf.costMetric, "cost-metric", "", "size_mb (default) or mmacs, for --cost-weight without a budget")
	f.Uint64Var(&sf.seed, "seed", 0, "random seed (default 1)")

	f.StringVar(&sf.randomLike, "random-like", "", "write a random architecture of the size of this spec file instead of searching")
	f.IntVar(&sf.randomTries, "random-tries", 2000, "uniform random architectures drawn for --random-like")
	return cmd
}

// readJSONArg returns s itself when it is inline JSON, else the content of
// the file it names.
func readJSONArg(s string) ([]byte, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		return []byte(t), nil
	}
	return os.ReadFile(s)
}

// toConfig builds the configuration: --config or the defaults, then every
// flag given on the command line.
func (sf *searchFlags) toConfig() (nas.Config, error) {
	f := sf.flagSet
	c := nas.DefaultConfig()
	if sf.config != "" {
		b, err := os.ReadFile(sf.config)
		if err != nil {
			return c, fmt.Errorf("search: --config: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("search: --config %s: %w", sf.config, err)
		}
	}
	var errs []error
	add := func(name string, apply func() error) {
		if !f.Changed(name) {
			return
		}
		if err := apply(); err != nil {
			errs = append(errs, fmt.Errorf("search: --%s: %w", name, err))
		}
	}
	add("out", func() error { c.Out = sf.out; return nil })
	add("supernet", func() error { c.Supernet.Arch = sf.supernet; return nil })
	add("supernet-config", func() error {
		b, err := readJSONArg(sf.supernetConfig)
		if err != nil {
			return err
		}
		if !json.Valid(b) {
			return fmt.Errorf("%q is not JSON", sf.supernetConfig)
		}
		c.Supernet.Config = json.RawMessage(b)
		return nil
	})
	add("in-channels", func() error { c.Supernet.InChannels = sf.inChannels; return nil })
	add("classes", func() error { c.Supernet.Classes = sf.classes; return nil })
	add("input", func() error {
		in, err := parseTrainInput(sf.input)
		c.Input = in
		return err
	})
	add("pipeline", func() error {
		b, err := readJSONArg(sf.pipeline)
		if err != nil {
			return err
		}
		p, err := volume.ParsePipeline(b)
		c.Pipeline = p
		return err
	})
	if f.Changed("data") || f.Changed("layout") || f.Changed("phantoms") {
		c.Data = train.DataSource{Folder: sf.data, Layout: sf.layout, Root: sf.root, Phantoms: sf.phantoms}
	} else if f.Changed("root") {
		c.Data.Root = sf.root
	}
	add("seed", func() error { c.Seed = sf.seed; return nil })
	if c.Data.Phantoms > 0 {
		if f.Changed("phantom-seed") {
			c.Data.PhantomSeed = sf.phantomSeed
		} else if f.Changed("phantoms") || f.Changed("seed") {
			c.Data.PhantomSeed = c.Seed
		}
	}
	if f.Changed("phantom-size") {
		c.Data.PhantomCols, c.Data.PhantomRows = sf.phantomSize, sf.phantomSize
	}
	add("phantom-slices", func() error { c.Data.PhantomSlices = sf.phantomSlices; return nil })
	add("mode", func() error { c.Mode = nas.Mode(strings.ToLower(sf.mode)); return nil })
	add("epochs", func() error { c.Epochs = sf.epochs; return nil })
	add("batch", func() error { c.BatchSize = sf.batch; return nil })
	add("steps", func() error { c.StepsPerEpoch = sf.steps; return nil })
	add("warmup-epochs", func() error { c.WarmupEpochs = sf.warmup; return nil })
	add("tau-start", func() error {
		c.Temperature.Start = sf.tauStart
		if !f.Changed("tau-end") {
			c.Temperature.End = min(c.Temperature.End, sf.tauStart)
		}
		return nil
	})
	add("tau-end", func() error { c.Temperature.End = sf.tauEnd; return nil })
	add("tau-decay", func() error { c.Temperature.Decay = sf.tauDecay; return nil })
	add("tau-per-step", func() error { c.Temperature.PerStep = sf.tauPerStep; return nil })
	add("arch-lr", func() error { c.ArchLR = sf.archLR; return nil })
	add("arch-wd", func() error { c.ArchWeightDecay = sf.archWD; return nil })
	add("arch-beta1", func() error { c.ArchBeta1 = sf.archBeta1; return nil })
	add("arch-beta2", func() error { c.ArchBeta2 = sf.archBeta2; return nil })
	add("lr", func() error { c.LR = sf.lr; return nil })
	add("wd", func() error { c.WeightDecay = sf.wd; return nil })
	add("clip", func() error { c.ClipNorm = sf.clip; return nil })
	if f.Changed("max-mb") && f.Changed("max-mmacs") {
		errs = append(errs, errors.New("search: give one of --max-mb and --max-mmacs"))
	}
	add("cost-metric", func() error { c.Resource.Metric = nas.Metric(sf.costMetric); return nil })
	add("cost-weight", func() error {
		c.Resource.Weight = sf.costWeight
		if c.Resource.Metric == "" {
			c.Resource.Metric = nas.MetricSize
		}
		return nil
	})
	budget := func(m nas.Metric, v float64) func() error {
		return func() error {
			if !(v > 0) {
				return fmt.Errorf("budget %g: want a positive value", v)
			}
			c.Resource.Metric, c.Resource.Target = m, v
			if !f.Changed("cost-weight") {
				c.Resource.Weight = 1
			}
			return nil
		}
	}
	add("max-mb", budget(nas.MetricSize, sf.maxMB))
	add("max-mmacs", budget(nas.MetricMACs, sf.maxMMACs))
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, nil
}

// readArchSpec reads an architecture spec file (a net3d.Spec as written by
// `ctlens search`: arch, in_channels, classes, config), rejecting unknown
// fields and unregistered architectures. in_channels 0 becomes 1.
func readArchSpec(path string) (net3d.Spec, error) {
	var s net3d.Spec
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%s: not an architecture spec: %w", path, err)
	}
	if s.Arch == "" {
		return s, fmt.Errorf("%s: architecture spec has no \"arch\"", path)
	}
	if _, ok := net3d.Lookup(s.Arch); !ok {
		return s, fmt.Errorf("%s: arch %q is not a registered architecture (see ctlens models)", path, s.Arch)
	}
	if s.InChannels == 0 {
		s.InChannels = 1
	}
	return s, nil
}

// runRandomLike writes a random architecture of the size of the spec in
// --random-like (same space, input from --input) to --out/random.json.
func (sf *searchFlags) runRandomLike(w io.Writer) error {
	f := sf.flagSet
	spec, err := readArchSpec(sf.randomLike)
	if err != nil {
		return fmt.Errorf("search: --random-like: %w", err)
	}
	if spec.Classes == 0 {
		spec.Classes = 3
	}
	input := nas.DefaultConfig().Input
	if f.Changed("input") {
		if input, err = parseTrainInput(sf.input); err != nil {
			return fmt.Errorf("search: --input: %w", err)
		}
	}
	seed := uint64(1)
	if f.Changed("seed") {
		seed = sf.seed
	}
	out := "search"
	if f.Changed("out") {
		out = sf.out
	}
	sn, err := net3d.NewSupernet(spec, seed)
	if err != nil {
		return fmt.Errorf("search: --random-like %s: %w", sf.randomLike, err)
	}
	costs, err := nas.NewCosts(sn, input)
	if err != nil {
		return err
	}
	target, err := costs.Cost(sn.Choices(), nas.MetricSize)
	if err != nil {
		return err
	}
	choices, mb, err := nas.RandomLike(costs, nas.MetricSize, target, sf.randomTries, rand.New(rand.NewPCG(seed, 0x7a4d)))
	if err != nil {
		return err
	}
	rs, err := sn.SpecFor(choices)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(out, RandomFile)
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	names := make([]string, len(choices))
	for i, ci := range sn.Cells() {
		names[i] = ci.Candidates[choices[i]]
	}
	fmt.Fprintf(w, "target %.4f MB (%s)\nrandom architecture: %s\nsize %.4f MB\nwrote %s\n", target, sf.randomLike, strings.Join(names, ", "), mb, path)
	return nil
}
