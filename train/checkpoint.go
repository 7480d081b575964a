package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ctlens/ctlens/net3d"
	"github.com/ctlens/ctlens/nn"
	"github.com/ctlens/ctlens/tensor"
	"github.com/ctlens/ctlens/volume"
)

// Metadata keys a trained checkpoint carries besides net3d.MetaSpec and
// net3d.MetaClassNames.
const (
	// MetaPipeline holds the preprocessing volume.Pipeline as JSON; scoring
	// applies it with a nil random source (inference).
	MetaPipeline = "ctlens.pipeline"
	// MetaInput holds the network input size [depth, height, width] as JSON.
	MetaInput = "ctlens.input"
	// MetaRecipe holds the training Recipe as JSON.
	MetaRecipe = "ctlens.recipe"
	// MetaEpoch holds the (1-based) epoch the weights are from.
	MetaEpoch = "ctlens.epoch"
	// MetaWeights says which weights were saved: "ema" (the moving
	// average) or "raw".
	MetaWeights = "ctlens.weights"
	// metaTrainState holds the resumable trainState as JSON.
	metaTrainState = "ctlens.train_state"
)

// Files of a run's output folder.
const (
	// StateFile is the resumable training state, rewritten (atomically)
	// after every epoch.
	StateFile = "state.safetensors"
	// BestFile and LastFile are model checkpoints (net3d.LoadCheckpoint) of
	// the best epoch on the validation split and of the last epoch.
	BestFile = "best.safetensors"
	LastFile = "last.safetensors"
	// LogFile has one JSON object per line: a "dataset" line, then one
	// "epoch" line per epoch and, when a test set is given, a "test" line.
	LogFile = "log.jsonl"
	// CurvesFile plots the loss and accuracy curves.
	CurvesFile = "curves.png"
	// RecipeFile is the run's recipe, for resuming.
	RecipeFile = "recipe.json"
)

// stateVersion is the version of the trainState format.
const stateVersion = 1

// trainState is what a resumed run needs besides tensors.
type trainState struct {
	Version int `json:"version"`
	// Epoch is the number of completed epochs and Step the number of
	// optimizer steps taken.
	Epoch int `json:"epoch"`
	Step  int `json:"step"`
	// BestEpoch is the best epoch so far (0: none yet) with its validation
	// loss and accuracy.
	BestEpoch  int     `json:"best_epoch"`
	BestLoss   float64 `json:"best_loss"`
	BestAcc    float64 `json:"best_acc"`
	EMAUpdates int     `json:"ema_updates"`
	// Classes are the class names by label; History the completed epochs.
	Classes []string      `json:"classes"`
	History []EpochRecord `json:"history"`
	Recipe  Recipe        `json:"recipe"`
}

// Tensor name prefixes inside the state file.
const (
	prefixModel = "model/"
	prefixOptim = "optim/"
	prefixEMA   = "ema/"
)

// saveState writes the model's state dict, the optimizer state, the EMA
// averages (ema may be nil) and st to path in one safetensors file,
// atomically.
func saveState(path string, st trainState, model nn.Module, opt nn.Optimizer, ema *nn.EMA) error {
	st.Version = stateVersion
	js, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("train: save state: %w", err)
	}
	var ts []nn.Named
	add := func(prefix string, list []nn.Named) {
		for _, t := range list {
			ts = append(ts, nn.Named{Name: prefix + t.Name, Tensor: t.Tensor})
		}
	}
	add(prefixModel, nn.StateDict(model))
	add(prefixOptim, opt.State())
	if ema != nil {
		add(prefixEMA, ema.State())
	}
	if err := nn.WriteTensors(path, ts, map[string]string{metaTrainState: string(js)}); err != nil {
		return fmt.Errorf("train: save state: %w", err)
	}
	return nil
}

// readStateMeta reads only the trainState of a state file.
func readStateMeta(path string) (trainState, []nn.Named, error) {
	ts, meta, err := nn.ReadTensors(path)
	if err != nil {
		return trainState{}, nil, fmt.Errorf("train: resume: %w", err)
	}
	raw, ok := meta[metaTrainState]
	if !ok {
		return trainState{}, nil, fmt.Errorf("train: resume: %s has no %s metadata: not a ctlens training state", path, metaTrainState)
	}
	var st trainState
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return trainState{}, nil, fmt.Errorf("train: resume: %s: %s: %w", path, metaTrainState, err)
	}
	if st.Version != stateVersion {
		return trainState{}, nil, fmt.Errorf("train: resume: %s: state version %d, this build reads %d", path, st.Version, stateVersion)
	}
	return st, ts, nil
}

// restoreState loads the tensors of a state file into model, opt and ema
// (which must have been built as for the saved run).
func restoreState(path string, st trainState, ts []nn.Named, model nn.Module, opt nn.Optimizer, ema *nn.EMA) error {
	var ms, os_, es []nn.Named
	for _, t := range ts {
		switch {
		case strings.HasPrefix(t.Name, prefixModel):
			ms = append(ms, nn.Named{Name: strings.TrimPrefix(t.Name, prefixModel), Tensor: t.Tensor})
		case strings.HasPrefix(t.Name, prefixOptim):
			os_ = append(os_, nn.Named{Name: strings.TrimPrefix(t.Name, prefixOptim), Tensor: t.Tensor})
		case strings.HasPrefix(t.Name, prefixEMA):
			es = append(es, nn.Named{Name: strings.TrimPrefix(t.Name, prefixEMA), Tensor: t.Tensor})
		default:
			return fmt.Errorf("train: resume: %s: unexpected tensor %q", path, t.Name)
		}
	}
	if _, err := nn.LoadState(ms, model, nn.LoadOpts{Strict: true}); err != nil {
		return fmt.Errorf("train: resume: %s: model: %w", path, err)
	}
	if err := opt.LoadState(os_); err != nil {
		return fmt.Errorf("train: resume: %s: optimizer: %w", path, err)
	}
	if ema != nil {
		if len(es) == 0 && st.EMAUpdates > 0 {
			return fmt.Errorf("train: resume: %s: no EMA averages saved", path)
		}
		if err := ema.LoadState(es, st.EMAUpdates); err != nil {
			return fmt.Errorf("train: resume: %s: EMA: %w", path, err)
		}
	} else if len(es) > 0 {
		return fmt.Errorf("train: resume: %s: holds EMA averages but the recipe has no ema_decay", path)
	}
	return nil
}

// modelMeta returns the metadata of a model checkpoint of epoch.
func modelMeta(r Recipe, pl volume.Pipeline, classes []string, epoch int, weights string) (map[string]string, error) {
	pj, err := json.Marshal(pl)
	if err != nil {
		return nil, err
	}
	cj, err := json.Marshal(classes)
	if err != nil {
		return nil, err
	}
	ij, err := json.Marshal(r.Input)
	if err != nil {
		return nil, err
	}
	rj, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return map[string]string{
		MetaPipeline:         string(pj),
		MetaInput:            string(ij),
		MetaRecipe:           string(rj),
		MetaEpoch:            strconv.Itoa(epoch),
		MetaWeights:          weights,
		net3d.MetaClassNames: string(cj),
	}, nil
}

// Preprocessing is how a trained checkpoint prepares a scan for its
// network: the pipeline (applied in inference mode), the input size and
// channel count, and the class names by label.
type Preprocessing struct {
	Pipeline volume.Pipeline
	Input    [3]int // depth, height, width
	Channels int
	Classes  []string
}

// PreprocessingFromMeta reads the preprocessing stored in a checkpoint's
// metadata (net3d.LoadCheckpoint returns it) by Run: MetaPipeline,
// MetaInput, net3d.MetaClassNames and the spec's input channels.
func PreprocessingFromMeta(meta map[string]string) (Preprocessing, error) {
	var p Preprocessing
	need := func(key string, dst any) error {
		raw, ok := meta[key]
		if !ok {
			return fmt.Errorf("train: checkpoint has no %s metadata (not written by `ctlens train`)", key)
		}
		if err := json.Unmarshal([]byte(raw), dst); err != nil {
			return fmt.Errorf("train: checkpoint metadata %s: %w", key, err)
		}
		return nil
	}
	var spec net3d.Spec
	if err := need(net3d.MetaSpec, &spec); err != nil {
		return p, err
	}
	raw, ok := meta[MetaPipeline]
	if !ok {
		return p, fmt.Errorf("train: checkpoint has no %s metadata (not written by `ctlens train`)", MetaPipeline)
	}
	pl, err := volume.ParsePipeline([]byte(raw))
	if err != nil {
		return p, fmt.Errorf("train: checkpoint metadata %s: %w", MetaPipeline, err)
	}
	if err := need(MetaInput, &p.Input); err != nil {
		return p, err
	}
	if err := need(net3d.MetaClassNames, &p.Classes); err != nil {
		return p, err
	}
	for i, n := range p.Input {
		if n < 1 {
			return p, fmt.Errorf("train: checkpoint metadata %s: input[%d] = %d", MetaInput, i, n)
		}
	}
	if spec.InChannels < 1 {
		return p, fmt.Errorf("train: checkpoint spec: in_channels %d", spec.InChannels)
	}
	if len(p.Classes) != spec.Classes {
		return p, fmt.Errorf("train: checkpoint: %d class names for %d classes", len(p.Classes), spec.Classes)
	}
	p.Pipeline, p.Channels = pl, spec.InChannels
	return p, nil
}

// Tensor prepares v (a scan in HU) for the network in inference mode:
// the pipeline with a nil random source, then the 1×C×D×H×W input (the
// volume replicated to every channel).
func (p Preprocessing) Tensor(v *volume.Volume) (*tensor.Tensor, error) {
	out, _, err := applyPipeline(p.Pipeline, v, nil, p.Input)
	if err != nil {
		return nil, fmt.Errorf("train: preprocess: %w", err)
	}
	x := make([]float32, p.Channels*len(out.Voxels))
	fillChannels(x, out.Voxels, p.Channels)
	return tensor.New(x, 1, p.Channels, p.Input[0], p.Input[1], p.Input[2]), nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// folder and a rename.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	perr := f.Chmod(0o644)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, perr, serr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// exists reports whether path exists (errors other than not-exist count as
// existing, so that they surface when the file is read).
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
