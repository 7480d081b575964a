package api

import (
	"strconv"
	"strings"
)

// obj is a JSON object of the OpenAPI document.
type obj = map[string]any

// pathParamDocs describes every {name} that patterns use.
var pathParamDocs = map[string]obj{
	"id":    {"description": "study or job id (20 characters a-z, 2-7)", "schema": obj{"type": "string", "pattern": "^[a-z2-7]{20}$"}},
	"n":     {"description": "series index in the result's \"series\" array", "schema": obj{"type": "integer", "minimum": 0}},
	"plane": {"description": "slice orientation", "schema": obj{"type": "string", "enum": []string{"axial", "coronal", "sagittal"}}},
	"index": {"description": "slice index along the plane's fixed axis (axial k, coronal j, sagittal i)", "schema": obj{"type": "integer", "minimum": 0}},
}

// OpenAPI returns the OpenAPI 3.0 document describing routes: one
// operation per route (a subtree route documented at its pattern), with
// path and query parameters, the upload form, responses and their
// schemas, and bearer security on the routes that need the token.
func OpenAPI(routes []Route) map[string]any {
	paths := obj{}
	for _, rt := range routes {
		item, _ := paths[rt.Pattern].(obj)
		if item == nil {
			item = obj{}
			paths[rt.Pattern] = item
		}
		item[strings.ToLower(rt.Method)] = operation(rt)
	}
	return obj{
		"openapi": "3.0.3",
		"info": obj{
			"title":   "ctlens",
			"version": "1",
			"description": "Chest-CT classification with 3D networks and class-activation heatmaps. " + Caveat +
				" Errors are JSON {\"error\", \"code\"}. With a token configured every /api/ route needs Authorization: Bearer <token>" +
				" (401 when missing, 403 when wrong). GET / and every path below it that no other route takes serve the web UI.",
		},
		"paths": paths,
		"components": obj{
			"securitySchemes": obj{"bearer": obj{"type": "http", "scheme": "bearer"}},
			"schemas":         schemas(),
		},
	}
}

func operation(rt Route) obj {
	op := obj{"operationId": rt.OperationID, "summary": rt.Summary, "tags": []string{rt.Tag}}
	var params []obj
	for _, name := range rt.pathParams() {
		d := pathParamDocs[name]
		params = append(params, obj{"name": name, "in": "path", "required": true, "description": d["description"], "schema": d["schema"]})
	}
	for _, q := range rt.Query {
		sc := obj{"type": q.Type}
		if len(q.Enum) > 0 {
			sc["enum"] = q.Enum
		}
		params = append(params, obj{"name": q.Name, "in": "query", "required": false, "description": q.Description, "schema": sc})
	}
	if len(params) > 0 {
		op["parameters"] = params
	}
	if rt.Upload {
		op["requestBody"] = obj{"required": true, "content": obj{"multipart/form-data": obj{"schema": ref("Upload")}}}
	}
	resps := obj{}
	for _, r := range rt.Responses {
		resp := obj{"description": r.Description}
		if r.ContentType != "" {
			media := obj{}
			switch {
			case r.Schema != "":
				media["schema"] = ref(r.Schema)
			case strings.HasPrefix(r.ContentType, "text/"):
				media["schema"] = obj{"type": "string"}
			default:
				media["schema"] = obj{"type": "string", "format": "binary"}
			}
			resp["content"] = obj{r.ContentType: media}
		}
		headers := obj{}
		if r.Status == 429 || r.Status == 503 {
			headers["Retry-After"] = obj{"description": "seconds to wait", "schema": obj{"type": "integer"}}
		}
		if r.Status == 202 {
			headers["Location"] = obj{"description": "the job's status URL", "schema": obj{"type": "string"}}
		}
		if r.Status == 200 && r.ContentType == "application/octet-stream" {
			headers["X-Dims"] = obj{"description": "cols,rows,slices", "schema": obj{"type": "string"}}
			headers["X-Spacing"] = obj{"description": "x,y,z voxel spacing in mm", "schema": obj{"type": "string"}}
		}
		if len(headers) > 0 {
			resp["headers"] = headers
		}
		resps[strconv.Itoa(r.Status)] = resp
	}
	if rt.Auth {
		op["security"] = []obj{{"bearer": []string{}}}
		resps["401"] = obj{"description": "missing or malformed Authorization header", "content": obj{"application/json": obj{"schema": ref("Error")}}}
		resps["403"] = obj{"description": "wrong bearer token", "content": obj{"application/json": obj{"schema": ref("Error")}}}
	}
	resps["500"] = obj{"description": "internal error", "content": obj{"application/json": obj{"schema": ref("Error")}}}
	op["responses"] = resps
	return op
}

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func str(desc string) obj { return obj{"type": "string", "description": desc} }

func arr(items obj, n int) obj {
	a := obj{"type": "array", "items": items}
	if n > 0 {
		a["minItems"], a["maxItems"] = n, n
	}
	return a
}

func object(required []string, props obj) obj {
	o := obj{"type": "object", "properties": props}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

func schemas() obj {
	num := obj{"type": "number"}
	integer := obj{"type": "integer"}
	return obj{
		"Error": object([]string{"error", "code"}, obj{
			"error": str("what is wrong, naming the file, field or limit"),
			"code":  str("short machine-readable code"),
		}),
		"Upload": object([]string{"file"}, obj{
			"file":    obj{"type": "array", "items": obj{"type": "string", "format": "binary"}, "description": "DICOM files, or one .zip archive, or one .nii/.nii.gz file"},
			"model":   str("model name from GET /api/v1/models (default: the default model)"),
			"heatmap": obj{"type": "string", "enum": []string{"true", "false"}, "default": "true"},
			"method":  obj{"type": "string", "enum": []string{"gradcam", "gradcampp", "cam"}},
		}),
		"Accepted": object([]string{"study_id", "job_id", "status_url"}, obj{
			"study_id": str("the new study"), "job_id": str("its job"), "status_url": str("/api/v1/jobs/<job_id>"),
		}),
		"Job": object([]string{"id", "study_id", "state", "progress", "stage", "created", "updated"}, obj{
			"id":       str("job id"),
			"study_id": str("study id"),
			"state":    obj{"type": "string", "enum": []string{StateQueued, StateRunning, StateDone, StateFailed}},
			"progress": obj{"type": "number", "minimum": 0, "maximum": 1},
			"stage":    obj{"type": "string", "enum": []string{"upload", "discover", "load", "preprocess", "infer", "heatmap", "done"}},
			"error":    str("why the job failed (empty otherwise)"),
			"created":  obj{"type": "string", "format": "date-time"},
			"updated":  obj{"type": "string", "format": "date-time"},
		}),
		"Model": object([]string{"name", "classes", "default"}, obj{
			"name": str("model name"), "arch": str("architecture"), "classes": arr(obj{"type": "string"}, 0),
			"params": integer, "default": obj{"type": "boolean"}, "description": str("what the model is"), "caveat": str(Caveat),
		}),
		"ModelList": arr(ref("Model"), 0),
		"Heatmap": object([]string{"method", "class"}, obj{
			"method": str("gradcam, gradcampp or cam"), "layer": str("explained layer"), "class": str("explained class"),
			"peak_mm": arr(num, 3), "peak_voxel": arr(integer, 3),
			"lung_share": obj{"type": "number", "nullable": true, "description": "share of heat inside the lungs"},
		}),
		"Series": object([]string{"dims", "spacing", "probabilities", "predicted"}, obj{
			"series_uid":    str("SeriesInstanceUID"),
			"description":   str("SeriesDescription"),
			"dims":          arr(integer, 3),
			"spacing":       arr(num, 3),
			"probabilities": obj{"type": "object", "additionalProperties": num},
			"predicted":     str("class with the highest probability"),
			"preprocessing": obj{"type": "array", "items": obj{"type": "object"}, "description": "volume.Pipeline JSON"},
			"timings_ms":    obj{"type": "object", "additionalProperties": num},
			"heatmap":       obj{"allOf": []obj{ref("Heatmap")}, "nullable": true},
			"warnings":      arr(obj{"type": "string"}, 0),
		}),
		"Result": object([]string{"study_id", "model", "series"}, obj{
			"study_id": str("study id"),
			"model": object([]string{"name", "classes", "caveat"}, obj{
				"name": str("model name"), "version": str("model version"), "arch": str("architecture"),
				"classes": arr(obj{"type": "string"}, 0), "caveat": str(Caveat),
			}),
			"series": arr(ref("Series"), 0),
		}),
	}
}
