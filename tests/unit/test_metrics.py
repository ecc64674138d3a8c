import numpy as np

from isim import metrics


def test_confusion_ignores_void_and_counts_exactly():
    gt = np.array([[0, 1, 255], [1, 1, 2]], np.uint8)
    pred = np.array([[0, 1, 2], [0, 1, 2]], np.uint8)
    conf = metrics.confusion(pred, gt, 3)
    assert conf.sum() == 5  # the 255 pixel is not counted
    assert conf[1, 1] == 2 and conf[1, 0] == 1 and conf[2, 2] == 1 and conf[0, 0] == 1
    iou = metrics.iou(conf)
    np.testing.assert_allclose(iou, [1 / 2, 2 / 3, 1.0])
    assert abs(metrics.miou(conf) - np.mean([0.5, 2 / 3, 1.0])) < 1e-12


def test_absent_class_is_not_averaged():
    conf = metrics.confusion(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), 4)
    assert metrics.miou(conf) == 1.0
    s = metrics.summary(conf, ["bg", "a", "b", "c"])
    assert s["iou"]["a"] is None and s["miou"] == 100.0


def test_classification_accuracy():
    logits = np.array([[2.0, -1.0], [-3.0, -1.0]])
    targets = np.array([[1, 0], [0, 1]], np.float32)
    r = metrics.classification(logits, targets)
    assert r == {"label_acc": 75.0, "exact_match": 50.0}


def test_object_precision_and_recall_show_under_coverage():
    gt = np.array([[0, 1, 1, 1], [0, 2, 2, 0]], np.uint8)
    part = np.array([[0, 1, 0, 0], [0, 2, 2, 0]], np.uint8)  # a third of object 1 found, nothing spurious
    p, r = metrics.object_precision_recall(metrics.confusion(part, gt, 3))
    assert p == 1.0 and r == 3 / 5
    wrong = np.array([[2, 1, 1, 1], [0, 2, 1, 0]], np.uint8)  # one spill, one class confusion
    p, r = metrics.object_precision_recall(metrics.confusion(wrong, gt, 3))
    assert p == 4 / 6 and r == 4 / 5
    s = metrics.summary(metrics.confusion(part, gt, 3), ["bg", "a", "b"])
    assert s["precision"] == 100.0 and s["recall"] == 60.0


def test_example_pictures_show_different_classes_first():
    from isim.visualize import example_ids

    class Data:  # the two members of data.prepared.Prepared that the picker reads
        labels = {"a1": [1], "a2": [1], "b1": [2, 1], "e": [], "c1": [3], "a3": [1]}

        def ids(self, split):
            return list(self.labels)

    assert example_ids(Data(), "train", 3) == ["a1", "b1", "c1"]
    assert example_ids(Data(), "train", 5) == ["a1", "b1", "c1", "a2", "a3"]  # never an image without objects
