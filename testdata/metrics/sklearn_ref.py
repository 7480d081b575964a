#!/usr/bin/python3
"""Reference classification metrics from scikit-learn for train/metrics_sklearn_test.go.

Usage: sklearn_ref.py IN.json OUT.json

IN.json:  {"cases": [{"name": str, "k": K, "labels": [N ints], "probs": [N rows of K floats]}],
           "quantiles": [{"values": [floats], "q": [floats in [0, 1]]}]}
OUT.json: {"sklearn": version, "cases": [one object per case, keys below], "quantiles": [[floats]]}

Every number comes from scikit-learn or numpy, never from the Go code under test:
  pred          numpy.argmax of each probability row (first index on ties)
  accuracy      sklearn.metrics.accuracy_score
  precision, recall, f1, support
                sklearn.metrics.precision_recall_fscore_support(labels=range(K), zero_division=0),
                per class and with average="macro" / "weighted"
  specificity   TN / (TN + FP) from sklearn.metrics.multilabel_confusion_matrix (0 when TN + FP = 0);
                macro = mean, weighted = numpy.average weighted by support
  confusion     sklearn.metrics.confusion_matrix(labels=range(K)) (rows true, columns predicted)
  auc           per class: sklearn.metrics.roc_auc_score(y == k, probs[:, k]); null when y == k is all
                true or all false; macro_auc / weighted_auc = mean / support-weighted mean of the defined ones
  sk_ovr_macro, sk_ovr_weighted
                sklearn.metrics.roc_auc_score(y, probs, multi_class="ovr", average=...) when K > 2 and
                every class's AUC is defined; for K == 2, roc_auc_score(y, probs[:, 1]) in both; else null
  roc           per class: sklearn.metrics.roc_curve(y == k, probs[:, k], drop_intermediate=False)
                as {"fpr", "tpr", "thresholds"} with thresholds[0] replaced by null (sklearn < 1.3 writes
                max + 1 there, >= 1.3 writes inf); null when the AUC is undefined
  quantiles     numpy.percentile(values, 100 * q) (default "linear" method)
"""
import json
import sys

import numpy as np
import sklearn
from sklearn import metrics


def case_metrics(case):
    k = case["k"]
    y = np.asarray(case["labels"], dtype=np.int64)
    p = np.asarray(case["probs"], dtype=np.float64).reshape(len(y), k)
    labels = list(range(k))
    pred = np.argmax(p, axis=1)

    out = {"name": case["name"], "pred": pred.tolist()}
    out["accuracy"] = float(metrics.accuracy_score(y, pred))
    prec, rec, f1, sup = metrics.precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0)
    out["precision"], out["recall"], out["f1"] = prec.tolist(), rec.tolist(), f1.tolist()
    out["support"] = [int(s) for s in sup]
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = metrics.precision_recall_fscore_support(
            y, pred, labels=labels, average=avg, zero_division=0)
        out[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}

    mcm = metrics.multilabel_confusion_matrix(y, pred, labels=labels)
    spec = []
    for m in mcm:
        tn, fp = int(m[0, 0]), int(m[0, 1])
        spec.append(tn / (tn + fp) if tn + fp > 0 else 0.0)
    out["specificity"] = spec
    out["macro"]["specificity"] = float(np.mean(spec))
    out["weighted"]["specificity"] = float(np.average(spec, weights=sup))
    out["confusion"] = metrics.confusion_matrix(y, pred, labels=labels).tolist()

    aucs, rocs, defined, weights = [], [], [], []
    for c in labels:
        pos = (y == c).astype(np.int64)
        if pos.min() == pos.max():
            aucs.append(None)
            rocs.append(None)
            continue
        a = float(metrics.roc_auc_score(pos, p[:, c]))
        fpr, tpr, thr = metrics.roc_curve(pos, p[:, c], drop_intermediate=False)
        aucs.append(a)
        defined.append(a)
        weights.append(int(pos.sum()))
        rocs.append({"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                     "thresholds": [None] + thr[1:].tolist()})
    out["auc"], out["roc"] = aucs, rocs
    out["macro_auc"] = float(np.mean(defined)) if defined else None
    out["weighted_auc"] = float(np.average(defined, weights=weights)) if defined else None
    out["sk_ovr_macro"] = out["sk_ovr_weighted"] = None
    if k == 2 and aucs[1] is not None:
        out["sk_ovr_macro"] = out["sk_ovr_weighted"] = float(metrics.roc_auc_score(y, p[:, 1]))
    elif k > 2 and all(a is not None for a in aucs):
        for avg in ("macro", "weighted"):
            out["sk_ovr_" + avg] = float(metrics.roc_auc_score(
                y, p, multi_class="ovr", average=avg, labels=labels))
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: sklearn_ref.py IN.json OUT.json")
    with open(sys.argv[1]) as f:
        inp = json.load(f)
    out = {"sklearn": sklearn.__version__,
           "cases": [case_metrics(c) for c in inp["cases"]],
           "quantiles": [np.percentile(np.asarray(q["values"], dtype=np.float64),
                                       100 * np.asarray(q["q"], dtype=np.float64)).tolist()
                         for q in inp.get("quantiles", [])]}
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
