package dicomio

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTransferSyntaxVariants re-encodes two real CT slices (pydicom's
// CT_small.dcm, 128x128 signed 16-bit, and 693_J2KI.dcm decompressed by
// GDCM, 512x512) into every lossless transfer syntax with dcmtk and GDCM,
// including fragmented RLE/JPEG/JPEG-LS and an empty Basic Offset Table,
// and checks that each decodes to exactly the stored values and HU of the
// native file (which TestPydicomFiles ties to pydicom). dicomio is not
// used to make any input.
func TestTransferSyntaxVariants(t *testing.T) {
	dir := needDir(t, pydicomTestFiles)
	tools := map[string]string{}
	for _, n := range []string{"dcmconv", "dcmcrle", "dcmcjpeg", "dcmcjpls", "gdcmconv"} {
		tools[n] = needTool(t, n)
	}
	tmp := t.TempDir()
	j2kRaw := filepath.Join(tmp, "693_raw.dcm")
	run(t, tools["gdcmconv"], "--raw", filepath.Join(dir, "693_J2KI.dcm"), j2kRaw)
	bases := map[string]string{"CT_small": filepath.Join(dir, "CT_small.dcm"), "693_J2KI_raw": j2kRaw}
	variants := []struct {
		name string
		tool string
		args []string
		ts   string
	}{
		{"implicit", "dcmconv", []string{"+ti"}, tsImplicitLE},
		{"explicit", "dcmconv", []string{"+te"}, tsExplicitLE},
		{"bigendian", "dcmconv", []string{"+tb"}, tsExplicitBE},
		{"deflate", "dcmconv", []string{"+td"}, tsDeflateLE},
		{"rle", "dcmcrle", nil, tsRLE},
		{"rle_fragments", "dcmcrle", []string{"+fs", "1"}, tsRLE},
		{"rle_fragments_nobot", "dcmcrle", []string{"+fs", "1", "-ot"}, tsRLE},
		{"jpeg_sv1", "dcmcjpeg", []string{"+e1"}, tsJPEGLLSV1},
		{"jpeg_lossless_p14_sv1", "dcmcjpeg", []string{"+el", "+sv", "1"}, tsJPEGLL14},
		{"jpeg_sv1_fragments", "dcmcjpeg", []string{"+e1", "+fs", "1"}, tsJPEGLLSV1},
		{"jpegls", "dcmcjpls", nil, tsJPEGLS},
		{"jpegls_fragments", "dcmcjpls", []string{"+fs", "1"}, tsJPEGLS},
		{"j2k_gdcm", "gdcmconv", []string{"--j2k"}, tsJ2KLL},
		{"jpegls_gdcm", "gdcmconv", []string{"--jpegls"}, tsJPEGLS},
		{"rle_gdcm", "gdcmconv", []string{"--rle"}, tsRLE},
	}
	// Lossy encodings: compare with GDCM's decoding of the same file.
	lossy := []struct {
		name string
		tool string
		args []string
		tol  int64
	}{
		{"jpegls_near", "gdcmconv", []string{"--jpegls", "--lossy", "--allowed-error", "2"}, 0},
		{"j2k_lossy", "gdcmconv", []string{"--j2k", "--lossy", "-q", "40"}, 0},
	}
	for _, l := range lossy {
		t.Run("lossy/"+l.name, func(t *testing.T) {
			enc := filepath.Join(tmp, "lossy_"+l.name+".dcm")
			dec := filepath.Join(tmp, "lossy_"+l.name+"_raw.dcm")
			run(t, tools[l.tool], append(append([]string{}, l.args...), bases["CT_small"], enc)...)
			run(t, tools["gdcmconv"], "--raw", enc, dec)
			got, err := ReadFile(enc, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			want, err := ReadFile(dec, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got.TransferSyntax != tsJPEGLSNear && got.TransferSyntax != tsJ2K {
				t.Fatalf("transfer syntax %s is not a lossy one", got.TransferSyntax)
			}
			if err := compareStored(got.Stored, want.Stored, l.tol); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Other JPEG Lossless predictors give a clear unsupported error.
	t.Run("jpeg_lossless_sv6_unsupported", func(t *testing.T) {
		out := filepath.Join(tmp, "sv6.dcm")
		run(t, tools["dcmcjpeg"], "+el", "+sv", "6", bases["CT_small"], out)
		_, err := ReadFile(out, Limits{})
		var ue *UnsupportedError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "selection value 6") {
			t.Fatalf("error %v, want UnsupportedError naming selection value 6", err)
		}
	})
	for bname, base := range bases {
		ref, err := ReadFile(base, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", bname, err)
		}
		refHU := ref.Rescaled(0)
		for _, v := range variants {
			t.Run(bname+"/"+v.name, func(t *testing.T) {
				out := filepath.Join(tmp, bname+"_"+v.name+".dcm")
				args := append(append([]string{}, v.args...), base, out)
				run(t, tools[v.tool], args...)
				im, err := ReadFile(out, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				if im.TransferSyntax != v.ts {
					t.Fatalf("transfer syntax %s, want %s", im.TransferSyntax, v.ts)
				}
				if err := compareStored(im.Stored, ref.Stored, 0); err != nil {
					t.Fatal(err)
				}
				hu := im.Rescaled(0)
				for i := range hu {
					if hu[i] != refHU[i] {
						t.Fatalf("HU[%d] = %v, native %v", i, hu[i], refHU[i])
					}
				}
				if st, _ := os.Stat(out); st != nil && v.name == "deflate" && st.Size() >= ref.Size {
					t.Logf("deflated file is not smaller (%d >= %d)", st.Size(), ref.Size)
				}
			})
		}
	}
}
