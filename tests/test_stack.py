"""Foundation: the framework stack is real — compiled mmcv ops, an mmdet Mask R-CNN step + inference,
an mmseg UperNet step, a detectron2 Mask R-CNN R50-C4 step. Each builds through the framework's own registry."""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.openmmlab


def test_mmcv_compiled_ops_match_hand_values():
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU(box0, box1) = 81 / (100 + 100 - 81) = 0.68 > 0.5 -> box1 suppressed
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))
    # RoIAlign of a constant map is that constant; of a linear ramp along x, the mean x of the bin centres
    feat = torch.arange(8, dtype=torch.float32).repeat(8, 1)[None, None]        # (1,1,8,8), value = x
    roi = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])                               # (batch_idx, x1, y1, x2, y2)
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feat, roi)
    # aligned=True shifts by -0.5: bin x-centres sample at 0.5, 1.5 (left bin) and 2.5, 3.5 (right) minus 0.5
    assert torch.allclose(out[0, 0], torch.tensor([[0.5, 2.5], [0.5, 2.5]]), atol=1e-5)


def _det_sample(h=128, w=160):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 20:60, 30:90] = 1
    masks[1, 70:120, 100:150] = 1
    inst = InstanceData(bboxes=torch.tensor([[30.0, 20, 90, 60], [100.0, 70, 150, 120]]),
                        labels=torch.tensor([0, 1]), masks=BitmapMasks(masks.numpy(), h, w))
    s = DetDataSample(gt_instances=inst)
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0),
                        batch_input_shape=(h, w)))
    return s


def test_mmdet_mask_rcnn_train_step_and_inference():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.hub import get_config
    from mmengine.optim import build_optim_wrapper

    register_all_modules()
    cfg = get_config("mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    cfg.model.roi_head.bbox_head.num_classes = 2
    cfg.model.roi_head.mask_head.num_classes = 2
    cfg.model.train_cfg.rcnn.sampler.num = 64          # CPU RoIAlign is single-threaded: keep RoIs few
    cfg.model.backbone.init_cfg = None                 # no download of torchvision weights (offline machine)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9)))
    torch.manual_seed(0)
    data = dict(inputs=[torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8)], data_samples=[_det_sample()])
    model.train()
    losses = model.train_step(data, optim)
    for k in ("loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"):
        assert k in losses and torch.isfinite(losses[k]), k
    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert len(preds) == 1 and hasattr(preds[0], "pred_instances")
    assert preds[0].pred_instances.bboxes.shape[-1] == 4


def test_mmseg_upernet_train_step():
    from mmengine.hub import get_config
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = get_config("mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py")
    bn = dict(type="BN", requires_grad=True)          # SyncBN needs a process group; plain BN on one CPU process
    cfg.model.backbone.norm_cfg = bn
    cfg.model.decode_head.norm_cfg = bn
    cfg.model.auxiliary_head.norm_cfg = bn
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.model.pretrained = None                        # no download of the ImageNet checkpoint (offline machine)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9)))
    samples = []
    for _ in range(2):
        s = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, 64, 64))))
        s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)], data_samples=samples)
    model.train()
    losses = model.train_step(data, optim)
    assert torch.isfinite(losses["decode.loss_ce"]) and torch.isfinite(losses["aux.loss_ce"])


@pytest.mark.detectron2
def test_detectron2_mask_rcnn_r50_c4_train_step():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200
    model = build_model(cfg)
    model.train()
    h, w = 128, 160
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 20:60, 30:90] = True
    masks[1, 70:120, 100:150] = True
    inst = Instances((h, w), gt_boxes=Boxes(torch.tensor([[30.0, 20, 90, 60], [100.0, 70, 150, 120]])),
                     gt_classes=torch.tensor([0, 1]), gt_masks=BitMasks(masks))
    batch = [{"image": torch.randint(0, 255, (3, h, w)).float(), "height": h, "width": w, "instances": inst}]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with EventStorage(0):
        losses = model(batch)
    total = sum(losses.values())
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls"} <= set(losses)
    assert torch.isfinite(total)
    opt.zero_grad()
    total.backward()
    opt.step()
