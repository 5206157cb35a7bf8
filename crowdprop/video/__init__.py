"""Video mode: human-in-the-loop semantic segmentation of whole videos.

An implementation of active sample selection + test-time fine-tuning (Qiao et al., WACV 2023)
on crowdprop's crowd machinery (HITs with golds, the quality rules, integer-cent budget):

* :mod:`.synth`     synthetic clips with exact per-frame label maps and known motion
* :mod:`.inputs`    frames (a folder of images or a video file), ``labels.json``, ground truth
* :mod:`.units`     units (frame, patch, superpixel), per-unit uncertainty and embedding
* :mod:`.select`    active selection (uncertain half, k-means, nearest to each centre) and baselines
* :mod:`.flow`      optical flow (OpenCV DIS), warping, forward-backward occlusion check
* :mod:`.model`     the segmentation network, pretraining, checkpoints (imports torch)
* :mod:`.finetune`  test-time fine-tuning: cross-entropy on labels + flow consistency (imports torch)
* :mod:`.crowd`     questions, the click model, golds, simulated workers, HITs and pay
* :mod:`.hits`      the questions as HITs on MTurk or an MTurk-compatible endpoint (boto3), journaled
* :mod:`.localcrowd` simulated workers doing those HITs on crowdprop's local endpoint
* :mod:`.page`      the worker page (``hit_templates/video_unit.html``) and its pictures
* :mod:`.rundir`    the run directory on disk; :mod:`.run` its layout, init and the round loop
  (atomic rounds, resume)
* :mod:`.report`    mIoU against clicks; :mod:`.export` label PNGs and COCO semantic JSON

Shapes: a clip is ``frames`` uint8 ``(T, H, W, 3)`` RGB and ``labels`` uint8 ``(T, H, W)`` class
ids (0 = background). Probabilities are ``(T, K, H, W)``; unit maps are int32 ``(T, H, W)`` of
global unit ids.
"""
