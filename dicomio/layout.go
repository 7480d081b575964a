package dicomio

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ctlens/ctlens/volume"
)

// ScanKind says how a scan is stored.
type ScanKind int

const (
	// KindDICOM is a folder (or zip) holding a DICOM series.
	KindDICOM ScanKind = iota
	// KindNIfTI is a single .nii or .nii.gz file.
	KindNIfTI
	// KindStack is a list of per-slice images (PNG, JPEG, TIFF).
	KindStack
)

func (k ScanKind) String() string {
	return [...]string{"dicom", "nifti", "stack"}[k]
}

// Scan is one labelled scan of a dataset.
type Scan struct {
	Class   string
	Label   int
	Patient string
	ID      string
	Kind    ScanKind
	// Path is the series folder, the NIfTI file, or the folder of a slice stack.
	Path string
	// Slices lists the slice files of a stack (or of a DICOM folder when the
	// layout names them), in order.
	Slices []string
}

// Dataset is a set of labelled scans.
type Dataset struct {
	Root    string
	Classes []string // by label
	Scans   []Scan
	// Skipped lists entries of the layout that name no readable scan, with
	// the reason.
	Skipped []string
}

// knownLabels is the label map of the CovidNet3D code, shared by its
// datasets (CC-CCII, MosMedData, COVID-CTset).
var knownLabels = map[string]int{
	"CP": 0, "NCP": 1, "Normal": 2,
	"CT-0": 0, "CT-1": 1, "CT-2": 1, "CT-3": 1, "CT-4": 1,
	"normal": 0, "covid": 1,
}

// labelClasses assigns labels: the CovidNet3D label map when every class is
// in it and it is a bijection onto 0..n-1 for these classes, else classes in
// sorted order.
func labelClasses(names []string) (map[string]int, []string) {
	sort.Strings(names)
	labels := map[string]int{}
	byLabel := map[int]string{}
	ok := true
	for _, n := range names {
		l, in := knownLabels[n]
		if !in || l >= len(names) {
			ok = false
			break
		}
		labels[n] = l
		byLabel[l] = n
	}
	if ok && len(byLabel) == len(names) {
		classes := make([]string, len(names))
		for l, n := range byLabel {
			classes[l] = n
		}
		return labels, classes
	}
	labels = map[string]int{}
	for i, n := range names {
		labels[n] = i
	}
	return labels, names
}

// ReadLayoutJSON reads a dataset in the CovidNet3D layout: a JSON file
// {class: {patient: {scan: [slice names]}}} whose scans lie under root. As in
// the reference loader, a scan whose first slice ends in .nii or .gz is the
// file root/class/<name>; otherwise it is the folder root/class/patient/scan
// holding the listed slices (images or DICOM files). Scans whose path does
// not exist or whose list is empty are skipped with a reason.
func ReadLayoutJSON(jsonPath, root string) (*Dataset, error) {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, fmt.Errorf("dicomio: dataset layout: %w", err)
	}
	var m map[string]map[string]map[string][]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("dicomio: dataset layout %s: want {class: {patient: {scan: [slices]}}}: %w", jsonPath, err)
	}
	var names []string
	for c := range m {
		names = append(names, c)
	}
	labels, classes := labelClasses(names)
	d := &Dataset{Root: root, Classes: classes}
	for _, c := range classes {
		patients := make([]string, 0, len(m[c]))
		for p := range m[c] {
			patients = append(patients, p)
		}
		sort.Slice(patients, func(i, j int) bool { return NaturalLess(patients[i], patients[j]) })
		for _, p := range patients {
			scans := make([]string, 0, len(m[c][p]))
			for s := range m[c][p] {
				scans = append(scans, s)
			}
			sort.Slice(scans, func(i, j int) bool { return NaturalLess(scans[i], scans[j]) })
			for _, s := range scans {
				slices := m[c][p][s]
				sc := Scan{Class: c, Label: labels[c], Patient: p, ID: s}
				if len(slices) == 0 {
					d.Skipped = append(d.Skipped, fmt.Sprintf("%s/%s/%s: empty slice list", c, p, s))
					continue
				}
				first := strings.ToLower(slices[0])
				if strings.HasSuffix(first, ".nii") || strings.HasSuffix(first, ".gz") {
					sc.Kind, sc.Path = KindNIfTI, filepath.Join(root, c, slices[0])
				} else {
					sc.Path = filepath.Join(root, c, p, s)
					sc.Kind = KindDICOM
					if IsStackImage(slices[0]) {
						sc.Kind = KindStack
					}
					for _, f := range slices {
						sc.Slices = append(sc.Slices, filepath.Join(sc.Path, f))
					}
				}
				if _, err := os.Stat(sc.Path); err != nil {
					d.Skipped = append(d.Skipped, fmt.Sprintf("%s/%s/%s: %s does not exist", c, p, s, sc.Path))
					continue
				}
				d.Scans = append(d.Scans, sc)
			}
		}
	}
	return d, nil
}

// ReadFolderLayout reads a dataset stored one folder per class: every entry
// of root/<class>/ is a scan — a .nii/.nii.gz file, a folder of slice images,
// or a folder holding a DICOM series (possibly nested one level deeper, as
// class/patient/scan). Other entries are skipped with a reason.
func ReadFolderLayout(root string) (*Dataset, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("dicomio: dataset folder: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("dicomio: dataset folder %s has no class folders", root)
	}
	labels, classes := labelClasses(names)
	d := &Dataset{Root: root, Classes: classes}
	for _, c := range classes {
		items, err := os.ReadDir(filepath.Join(root, c))
		if err != nil {
			return nil, fmt.Errorf("dicomio: dataset folder: %w", err)
		}
		for _, it := range items {
			p := filepath.Join(root, c, it.Name())
			if strings.HasPrefix(it.Name(), ".") {
				continue
			}
			if !it.IsDir() {
				low := strings.ToLower(it.Name())
				if (strings.HasSuffix(low, ".nii") || strings.HasSuffix(low, ".nii.gz")) && !strings.Contains(low, ".lesion.") && !strings.Contains(low, "_mask") {
					id := strings.TrimSuffix(strings.TrimSuffix(it.Name(), ".gz"), ".nii")
					d.Scans = append(d.Scans, Scan{Class: c, Label: labels[c], Patient: id, ID: id, Kind: KindNIfTI, Path: p})
				} else {
					d.Skipped = append(d.Skipped, fmt.Sprintf("%s: not a scan (want a .nii/.nii.gz file or a folder)", p))
				}
				continue
			}
			d.addFolderScans(c, labels[c], it.Name(), p, 0)
		}
	}
	return d, nil
}

// addFolderScans adds the scan(s) in folder p: a stack if it holds images,
// DICOM if it holds other files, else its sub-folders (one level deeper).
func (d *Dataset) addFolderScans(class string, label int, patient, p string, depth int) {
	ents, err := os.ReadDir(p)
	if err != nil {
		d.Skipped = append(d.Skipped, fmt.Sprintf("%s: %v", p, err))
		return
	}
	var images, files, dirs []string
	for _, e := range ents {
		switch {
		case strings.HasPrefix(e.Name(), "."):
		case e.IsDir():
			dirs = append(dirs, e.Name())
		case IsStackImage(e.Name()):
			images = append(images, filepath.Join(p, e.Name()))
		default:
			files = append(files, e.Name())
		}
	}
	id := filepath.Base(p)
	switch {
	case len(images) > 0:
		sort.Slice(images, func(i, j int) bool { return NaturalLess(filepath.Base(images[i]), filepath.Base(images[j])) })
		d.Scans = append(d.Scans, Scan{Class: class, Label: label, Patient: patient, ID: id, Kind: KindStack, Path: p, Slices: images})
	case len(files) > 0 && len(dirs) == 0:
		d.Scans = append(d.Scans, Scan{Class: class, Label: label, Patient: patient, ID: id, Kind: KindDICOM, Path: p})
	case len(dirs) > 0 && depth == 0:
		sort.Slice(dirs, func(i, j int) bool { return NaturalLess(dirs[i], dirs[j]) })
		for _, s := range dirs {
			d.addFolderScans(class, label, patient, filepath.Join(p, s), 1)
		}
	default:
		d.Skipped = append(d.Skipped, fmt.Sprintf("%s: no scan found (empty, or nested too deep)", p))
	}
}

// LoadScan reads one scan of a dataset into a volume, whatever its kind: a
// NIfTI file, a slice stack (its listed slices, or every image of its folder
// in natural order) or the largest CT series of a DICOM folder.
func LoadScan(s Scan, lim Limits) (*volume.Volume, error) {
	var v *volume.Volume
	var err error
	switch s.Kind {
	case KindNIfTI:
		v, err = ReadNIfTI(s.Path, lim)
	case KindStack:
		files := s.Slices
		if len(files) == 0 {
			if files, err = StackFiles(s.Path); err != nil {
				return nil, err
			}
		}
		v, err = ReadStack(files, lim)
	case KindDICOM:
		v, _, err = LoadVolume(s.Path, lim)
	default:
		return nil, fmt.Errorf("dicomio: %s: unknown scan kind %d", s.Path, s.Kind)
	}
	if err != nil {
		return nil, err
	}
	if err := v.Validate(); err != nil {
		return nil, fmt.Errorf("dicomio: %s: %w", s.Path, err)
	}
	return v, nil
}

// StackFiles lists the slice images of a stack folder in natural order.
func StackFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("dicomio: slice stack: %w", err)
	}
	var files []string
	for _, e := range ents {
		if !e.IsDir() && IsStackImage(e.Name()) {
			files = append(files, e.Name())
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("dicomio: slice stack %s: no slice images", dir)
	}
	sort.Slice(files, func(i, j int) bool { return NaturalLess(files[i], files[j]) })
	for i, f := range files {
		files[i] = filepath.Join(dir, f)
	}
	return files, nil
}
