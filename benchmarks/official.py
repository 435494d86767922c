"""The official CARE and SERE code, timed the same way as ours (run from a checkout outside ours).

Point the runner at work trees of the official repositories (``git archive`` of
ChongjianGE/CARE and MCG-NKU/SERE); nothing of theirs is copied here. Their files are imported
unchanged from that folder. What the CPU machine lacks is supplied around them, never inside their
files: empty stand-ins for ``ipdb`` (imported, never used, by CARE's ``care_module.py``) and
``tensorboardX`` (imported at the top of SERE's ``main_sere.py``, which also holds
``DataAugmentationiBOT``) when those packages are not installed. SERE's ``utils.py`` (iBOT's) is
part of the SERE repository.

The official SERE step is the body of ``main_sere.train_one_epoch`` for one iteration: its
networks, iBOT loss, self-relation losses, clipping, last-layer freeze and EMA, called in its
order on a batch of its own data pipeline, without DDP or ``.cuda()`` (a one-process gloo group
serves the loss's all-reduce, and the module global ``args`` that its ``__main__`` sets is set).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .steps import care_shape, precision, sere_shape
from .timing import Prepared, count_flops
from .views import FOLDER_IMAGES, IMAGES_PER_CALL, jpeg_folder

__all__ = ["prepare_official"]


def _stand_ins() -> None:
    """Empty modules for imports the official code makes but the benchmark never reaches."""
    for name, attrs in (("ipdb", ("set_trace",)), ("tensorboardX", ("SummaryWriter",))):
        if importlib.util.find_spec(name) is None and name not in sys.modules:
            module = types.ModuleType(name)
            for attr in attrs:
                setattr(module, attr, None)
            sys.modules[name] = module


def _import_from(root: Path, module: str) -> Any:
    _stand_ins()
    sys.path.insert(0, str(root))
    return importlib.import_module(module)


def _care_step(root: Path, device: str, setting: str, quick: bool) -> Prepared:
    if quick:
        raise SystemExit("the official CARE network has fixed ResNet-50 sizes: no --quick")
    shape = care_shape(quick, device.startswith("cuda"))
    care_module = _import_from(root, "models.care_module")
    torch.manual_seed(0)
    model = care_module.CARE(param_momentum=0.99, total_iters=1000).train().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = [torch.randn(shape.batch, 3, shape.size, shape.size, device=device) for _ in range(2)]

    def step() -> None:
        with precision(setting, device):
            loss = model(x)[0]  # its forward does the EMA update first
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return Prepared(step, shape.batch, lambda: count_flops(step), device)


def _care_views(root: Path, folder: Path, quick: bool) -> Prepared:
    transforms = _import_from(root, "data.transforms")
    torch.set_num_threads(1)
    q, k = transforms.standard_transform()
    files = sorted(folder.rglob("*.jpg"))
    order = [0]

    def call() -> None:
        for _ in range(IMAGES_PER_CALL):
            # torchvision's ImageFolder loader, as the official SSL_Dataset uses
            with open(files[order[0] % len(files)], "rb") as f:
                img = Image.open(f).convert("RGB")
            q(img), k(img)
            order[0] += 1

    return Prepared(call, IMAGES_PER_CALL)


def _sere_views(root: Path, folder: Path, quick: bool) -> Prepared:
    if quick:
        raise SystemExit("the official SERE views have fixed 224/96 px sizes: no --quick")
    main_sere = _import_from(root, "main_sere")
    torch.set_num_threads(1)
    ds = _sere_dataset(main_sere, _sere_args(main_sere), folder)
    order = [0]

    def call() -> None:
        for _ in range(IMAGES_PER_CALL):
            ds[order[0] % len(ds)]
            order[0] += 1

    return Prepared(call, IMAGES_PER_CALL)


def _single_process_group() -> None:
    """A one-process gloo group: the official iBOT loss all-reduces its centre."""
    import torch.distributed as dist

    if not dist.is_initialized():  # an in-process store: no port, no rendezvous
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def _sere_args(main_sere: Any) -> Any:
    """The official command line's defaults with the ViT-S/16 recipe's values (ours: the
    ``sere_vit_small.in1k_ep100`` recipe) where they differ."""
    args = main_sere.get_args_parser().parse_args([])
    args.arch, args.patch_size, args.drop_path = "vit_small", 16, 0.1
    args.out_dim = args.patch_out_dim = 8192
    args.shared_head = args.shared_head_teacher = True
    args.norm_last_layer = False
    args.teacher_temp, args.warmup_teacher_temp_epochs = 0.07, 30
    args.local_crops_number, args.global_crops_scale = 10, (0.4, 1.0)
    args.alpha, args.beta, args.clip_grad, args.freeze_last_layer = 0.2, 0.5, 0.3, 1
    args.pred_ratio, args.pred_ratio_var = [0.0, 0.3], [0.0, 0.2]
    return args


def _sere_networks(main_sere: Any, args: Any) -> tuple[Any, Any, Any]:
    """Student, teacher and iBOT loss built the way ``main_sere.train_sere`` builds them (without
    DDP and ``.cuda()``)."""
    models = importlib.import_module("models")
    utils = importlib.import_module("utils")
    vit = models.__dict__[args.arch]
    student = vit(
        patch_size=args.patch_size,
        drop_path_rate=args.drop_path,
        return_all_tokens=True,
        masked_im_modeling=args.use_masked_im_modeling,
        local_crop=True,
    )
    teacher = vit(patch_size=args.patch_size, return_all_tokens=True, local_crop=True)
    dim = student.embed_dim

    def head(shared: bool, **kw: Any) -> Any:
        return main_sere.iBOTHead(
            dim,
            args.out_dim,
            patch_out_dim=args.patch_out_dim,
            norm=args.norm_in_head,
            act=args.act_in_head,
            shared_head=shared,
            **kw,
        )

    student = utils.MultiCropWrapper(
        student, head(args.shared_head, norm_last_layer=args.norm_last_layer)
    )
    teacher = utils.MultiCropWrapper(teacher, head(args.shared_head_teacher))
    teacher.load_state_dict(student.state_dict(), strict=False)
    for p in teacher.parameters():
        p.requires_grad = False
    same_dim = args.shared_head or args.shared_head_teacher
    loss = main_sere.iBOTLoss(
        args.out_dim,
        args.out_dim if same_dim else args.patch_out_dim,
        args.global_crops_number,
        args.local_crops_number,
        args.warmup_teacher_temp,
        args.teacher_temp,
        args.warmup_teacher_patch_temp,
        args.teacher_patch_temp,
        args.warmup_teacher_temp_epochs,
        args.epochs,
        lambda1=args.lambda1,
        lambda2=args.lambda2,
        mim_start_epoch=args.pred_start_epoch,
        accum_iter=args.accum_iter,
    )
    return student, teacher, loss


def _sere_dataset(main_sere: Any, args: Any, folder: Path) -> Any:
    """The official ``ImageFolderMask`` over ``folder`` with ``DataAugmentationiBOT`` (views,
    grids, masks), built as ``main_sere.train_sere`` builds it from ``args``."""
    loader = importlib.import_module("loader")
    augment = main_sere.DataAugmentationiBOT(
        args.global_crops_scale,
        args.local_crops_scale,
        args.global_crops_number,
        args.local_crops_number,
        overlap_size=(13, 13),
    )
    return loader.ImageFolderMask(
        str(folder),
        transform=augment,
        patch_size=args.patch_size,
        pred_ratio=args.pred_ratio,
        pred_ratio_var=args.pred_ratio_var,
        pred_aspect_ratio=(0.3, 1 / 0.3),
        pred_shape=args.pred_shape,
    )


def _sere_batch(workdir: Path, main_sere: Any, args: Any, count: int) -> tuple[list[Any], ...]:
    """``count`` images of the view cases' JPEG folder through the official data pipeline,
    collated."""
    ds = _sere_dataset(main_sere, args, jpeg_folder(workdir, FOLDER_IMAGES))
    images, _, masks = torch.utils.data.default_collate([ds[i] for i in range(count)])
    return images, masks


def _sere_step(root: Path, workdir: Path, device: str, setting: str, quick: bool) -> Prepared:
    """One iteration of ``main_sere.train_one_epoch`` (its body, in its order, calling its
    networks, losses and helpers), on a batch from the official data pipeline."""
    if quick:
        raise SystemExit("the official SERE network has fixed ViT-S/16 sizes: no --quick")
    shape = sere_shape(quick, device.startswith("cuda"))
    main_sere = _import_from(root, "main_sere")
    utils = importlib.import_module("utils")
    _single_process_group()
    args = _sere_args(main_sere)
    # iBOTLoss.update_center reads the module global ``args`` that main_sere's ``__main__`` sets
    main_sere.args = args
    torch.manual_seed(0)
    student, teacher, ibot_loss = _sere_networks(main_sere, args)
    student, teacher, ibot_loss = student.to(device), teacher.to(device), ibot_loss.to(device)
    optimizer = torch.optim.AdamW(utils.get_params_groups(student), lr=1e-4)
    teacher_params = dict(teacher.named_parameters())  # EMA over the common names, as officially
    pairs = [(q, teacher_params[n]) for n, q in student.named_parameters() if n in teacher_params]
    images, masks = _sere_batch(workdir, main_sere, args, shape.batch)
    images = [im.to(device) for im in images]
    masks = [m.to(device) for m in masks]
    n_local, n_global = args.local_crops_number, args.global_crops_number
    grid_local = images[-4 * n_local : -2 * n_local]
    grid_global = images[-2 * n_local :]
    crops = images[: -4 * n_local]
    grid1, grid2, crops = crops[-4:-2], crops[-2:], crops[:-4]
    epoch = 1  # past the first epoch: the last layer's gradient is kept, as in most of a run

    def step() -> None:
        with precision(setting, device):
            teacher_out, t_channel, t_pixel, _, _, t_pixel_global = teacher(
                crops[:n_global], grid1, grid2, teacher=True
            )
            student_out, s_channel, s_pixel, _, _, _ = student(
                crops[:n_global], grid1, grid2, mask=masks[:n_global], teacher=False
            )
            student.backbone.masked_im_modeling = False
            local_cls, _, _, s_channel_local, s_pixel_local, _ = student(
                crops[n_global:], teacher=False
            )
            student.backbone.masked_im_modeling = args.use_masked_im_modeling
            terms = ibot_loss(student_out, teacher_out, local_cls[0], masks, epoch, it=0)
            pixel = main_sere.sere_loss_pixel(
                args,
                s_pixel,
                t_pixel,
                s_pixel_local,
                t_pixel_global,
                grid_local,
                grid_global,
                ncrops=2,
                ncrops_local=n_local,
            )
            channel = main_sere.sere_loss_channel(
                args, s_channel, t_channel, s_channel_local, ncrops=2, ncrops_local=n_local
            )
            cls_loss = terms.pop("loss")
        loss = cls_loss * (4 - args.alpha - args.beta) / 2.0 + pixel * args.alpha
        loss = loss + channel * args.beta
        loss.item()  # the official loop's finiteness check
        loss.backward()
        utils.clip_gradients(student, args.clip_grad)
        utils.cancel_gradients_last_layer(epoch, student, args.freeze_last_layer)
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for q, k in pairs:
                k.data.mul_(0.996).add_((1 - 0.996) * q.detach().data)

    return Prepared(step, shape.batch, lambda: count_flops(step), device)


def prepare_official(
    case: str, root: Path, folder: Path, device: str, setting: str, quick: bool
) -> Prepared:
    """The official implementation of ``case``.

    Args:
        case: ``care_step``, ``sere_step``, ``care_views`` or ``sere_views``.
        root: Work tree of the official repository.
        folder: JPEG folder of the view cases.
        device: ``cpu`` or ``cuda``.
        setting: Always ``official``.
        quick: Tiny sizes (not supported by the official code: exits).

    Returns:
        The prepared case.
    """
    if case == "care_step":
        return _care_step(root, device, setting, quick)
    if case == "sere_step":
        return _sere_step(root, folder, device, setting, quick)
    if case == "care_views":
        return _care_views(root, folder, quick)
    if case == "sere_views":
        return _sere_views(root, folder, quick)
    raise SystemExit(f"no official implementation of {case}")
