package nas

import (
	"strings"
	"testing"

	"github.com/ctlens/ctlens/train"
)

// TestOpenDataRefuses: the search checks its data as training does, and
// refuses healthy twins, which its phantom list does not draw.
func TestOpenDataRefuses(t *testing.T) {
	for _, tc := range []struct {
		d    train.DataSource
		want string
	}{
		{train.DataSource{}, "set exactly one of folder, layout and phantoms (have 0)"},
		{train.DataSource{Phantoms: 3, PhantomCols: 2000}, "phantom_cols 2000 outside 0..1024"},
		{train.DataSource{Phantoms: 3, PhantomTwins: true}, "phantom_twins is not supported by the search"},
	} {
		if _, err := OpenData(tc.d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to contain %q", tc.d, err, tc.want)
		}
	}
	ds, err := OpenData(train.DataSource{Phantoms: 3, PhantomCols: 16, PhantomSlices: 4})
	if err != nil || len(ds.Items) != 3 {
		t.Fatalf("3 phantoms: %v, %v", ds, err)
	}
}
