"""The ``moon-swift`` command: model building, data preparation and the end-to-end CPU demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import MoonInputError

#: the tiny CPU recipe the demo trains with: the repository's ``recipes/`` (editable install) or the copy in the wheel
TINY_RECIPE = next((p for p in (Path(__file__).parents[2] / "recipes" / "tiny_cpu.yaml",
                                Path(__file__).parent / "recipes" / "tiny_cpu.yaml") if p.is_file()),
                   Path("recipes", "tiny_cpu.yaml"))  # fmt: skip


def _print_written(files: Sequence[Path], what: str, out: Path) -> None:
    print(f"wrote {what} to {out}:")
    for path in files:
        print(f"  {path.name:<28} {path.stat().st_size / 1e6:9.2f} MB")


def _add_moe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("guided MoE (MoonConfig; default: dense)")
    group.add_argument("--moe-layers", help="decoder layers to turn into MoE: 'all', 'every:K' or '0,2,5'")
    group.add_argument("--num-experts", type=int, default=4, help="routed general experts per MoE layer")
    group.add_argument("--top-k", type=int, default=2, help="experts per routed token")
    group.add_argument("--no-guided-experts", action="store_true", help="plain MoE: no category/attribute experts")
    group.add_argument("--shared-expert", action="store_true", help="add an always-on shared expert")
    group.add_argument("--aux-loss-coef", type=float, default=0.01, help="load-balancing loss weight")
    group.add_argument("--z-loss-coef", type=float, default=0.0, help="router z-loss weight")
    group = parser.add_argument_group("contrastive temperature (MoonConfig)")
    group.add_argument("--learnable-temperature", action="store_true",
                       help="learn the temperature as a model parameter (moon_infonce then uses it)")  # fmt: skip
    group.add_argument("--init-temperature", type=float, default=0.05, help="its starting value")


def _moe_options(args: argparse.Namespace) -> dict:
    temperature = (
        {"learnable_temperature": True, "init_temperature": args.init_temperature} if args.learnable_temperature else {}
    )
    if not args.moe_layers:
        return temperature
    return {
        **temperature,
        "moe_layers": args.moe_layers,
        "num_experts": args.num_experts,
        "moe_top_k": args.top_k,
        "guided_experts": not args.no_guided_experts,
        "shared_expert": args.shared_expert,
        "moe_aux_loss_coef": args.aux_loss_coef,
        "moe_z_loss_coef": args.z_loss_coef,
    }


def cmd_make_tiny(args: argparse.Namespace) -> None:
    from .tiny_model import TinySpec, make_tiny

    if args.as_base and (args.moe_layers or args.learnable_temperature):
        raise MoonInputError(
            "--as-base writes a dense Qwen checkpoint; MoE and temperature options apply to MOON models",
            field="--as-base",
        )
    spec = TinySpec(base_model_type=args.as_base or "qwen2_5_vl", extra_config=_moe_options(args))
    files = make_tiny(args.out, seed=args.seed, spec=spec, as_base=args.as_base is not None)
    what = f"a tiny dense {args.as_base} checkpoint" if args.as_base else "a tiny MOON model"
    _print_written(files, f"{what} (seed {args.seed})", Path(args.out))


def cmd_upcycle(args: argparse.Namespace) -> None:
    from ..modeling.upcycle import upcycle

    files = upcycle(args.base, args.out, noise=args.noise, seed=args.seed, **_moe_options(args))
    _print_written(files, f"a MOON checkpoint upcycled from {args.base}", Path(args.out))
    from ..modeling.configuration_moon import MoonConfig

    _print_sizes(MoonConfig.from_pretrained(args.out), args)


def _print_sizes(config, args: argparse.Namespace) -> None:
    """Parameters and the training memory per GPU a run of it needs (the plan: the ``--plan-*`` options)."""
    from ..modeling.sizes import TrainingPlan, memory_lines, parameter_counts

    plan = TrainingPlan(gpus=args.plan_gpus, rows_per_gpu=args.plan_rows, products_per_row=2 + args.plan_negatives,
                        tokens=args.plan_tokens, momentum=args.plan_momentum)  # fmt: skip
    counts = parameter_counts(config)
    print("\n".join(counts.lines() + memory_lines(counts, config, plan)))


def cmd_plan(args: argparse.Namespace) -> None:
    """What ``upcycle`` prints about sizes, from a ``config.json`` alone (no weights read or written)."""
    from ..modeling.configuration_moon import MoonConfig
    from ..modeling.upcycle import moon_config_from_base, read_model_type

    folder = Path(args.model)
    if read_model_type(folder) == "moon":
        if _moe_options(args):
            raise MoonInputError("a MOON checkpoint keeps its own MoE layers and temperature: give --moe-layers or "
                                 "--learnable-temperature with a base model", file=str(folder / "config.json"),
                                 field="--moe-layers")  # fmt: skip
        config = MoonConfig.from_pretrained(folder)
    else:
        config = moon_config_from_base(folder, **_moe_options(args))
    _print_sizes(config, args)


def _at_least(least: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training plan of the memory estimate (default: recipes/moon_3b.yaml)")
    group.add_argument("--plan-gpus", type=_at_least(1), default=8, help="GPUs (data-parallel processes)")
    group.add_argument("--plan-rows", type=_at_least(1), default=32,
                       help="rows per GPU and step (per_device_train_batch_size)")  # fmt: skip
    group.add_argument("--plan-negatives", type=_at_least(0), default=1, help="hard negatives per row (prepare-data)")
    group.add_argument("--plan-tokens", type=_at_least(1), default=2048, help="tokens per sequence (max_length)")
    group.add_argument("--plan-momentum", action=argparse.BooleanOptionalAction, default=True,
                       help="moon_infonce's momentum queue (an fp32 average of the model)")  # fmt: skip


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from ..data.catalog_files import read_pairs
    from ..data.prepare import limit_catalog, prepare_data
    from ..data.sources import load_products

    # with --limit, behaviour pairs are checked against the whole catalog, then cut to the kept products
    records, pairs = load_products(args.catalog, args.format, on_bad_row=args.on_bad_row,
                                   limit=None if args.pairs else args.limit)  # fmt: skip
    if args.pairs:
        pairs = read_pairs(args.pairs, records, on_bad_row=args.on_bad_row)
    records, pairs = limit_catalog(records, pairs, args.limit)
    kinds = [kind.strip() for kind in args.catalog_pairs.split(",") if kind.strip()]
    encoder = _encoder(args, args.mine_with) if args.mine_with and args.hard_negatives else None
    report = prepare_data(records, pairs, args.out, catalog_pairs=kinds, val_fraction=args.val_fraction,
                          hard_negatives=args.hard_negatives, seed=args.seed, mine_with=encoder,
                          mine_search=args.mine_search)  # fmt: skip
    if encoder is not None:
        report.negatives_how += f" with {args.mine_with}"
    print(f"read {len(records)} products" + (f" and {len(pairs)} behaviour pairs" if pairs else "")
          + f" from {args.catalog}")  # fmt: skip
    print("\n".join(report.lines()))


def _encoder(args: argparse.Namespace, model: str, **options):
    """The encoder of a command that runs the model (``--adapter``, ``--device``, ``--dtype``, ``--batch-size``)."""
    import moon_swift.integrations.swift.plugin  # noqa: F401  (swift's moon model and template, hook or not)

    from ..eval.encode import ProductEncoder

    return ProductEncoder(model, adapters=getattr(args, "adapter", None) or (), device=args.device, dtype=args.dtype,
                          batch_size=getattr(args, "batch_size", 16), **options)  # fmt: skip


def cmd_photo_queries(args: argparse.Namespace) -> None:
    from ..data.photo_queries import write_photo_queries
    from ..data.sources import load_products

    records, _ = load_products(args.catalog, args.format, on_bad_row=args.on_bad_row, limit=args.limit)
    backgrounds = args.backgrounds or _development_data("street-photos", "--backgrounds")
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    report = write_photo_queries(records, backgrounds, args.out, kinds=kinds, val_fraction=args.val_fraction,
                                 seed=args.seed)  # fmt: skip
    print(f"composited photo queries for {len(records)} products from {args.catalog} on {backgrounds}")
    print("\n".join(report.lines()))


def cmd_check_data(args: argparse.Namespace) -> None:
    from ..data.validate import check_embedding_jsonl

    bad = 0
    for path in args.files:  # the summary of each file is logged by check_embedding_jsonl
        _, log = check_embedding_jsonl(path, on_bad_row="skip" if args.keep_going else "error")
        for example in log.examples:
            print(f"  {example}")
        bad += log.skipped
    if bad:
        raise MoonInputError(f"{bad} bad rows in {len(args.files)} file(s)")


def _load_catalog(args: argparse.Namespace):
    """(records, pairs) from ``--products`` in ``--format``, plus ``--pairs``."""
    from ..data.sources import load_products

    return load_products(args.products, args.format, pairs=getattr(args, "pairs", None),
                         on_bad_row=args.on_bad_row, limit=getattr(args, "limit", None))  # fmt: skip


def _add_model_arguments(p: argparse.ArgumentParser, what: str = "--model") -> None:
    group = p.add_argument_group(f"running {what}")
    group.add_argument("--adapter", action="append", help="LoRA adapter checkpoint (repeat: applied in order)")
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when a GPU is there, else cpu)")
    group.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                       help="default: bfloat16 on a GPU, float32 on the CPU")  # fmt: skip
    group.add_argument("--batch-size", type=int, default=16)


def _development_data(name: str, flag: str) -> str:
    """``../shared/data/<name>`` of the development checkout (the README's layout), or a message naming ``flag``."""
    path = Path("..", "shared", "data", name)
    if not path.is_dir():
        raise MoonInputError(f"no {name} at {path.resolve()}: pass {flag} DIR", field=flag)
    return str(path)


def _add_catalog_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--products", required=True, help="the catalog: a file or directory, see --format")
    p.add_argument(
        "--format",
        choices=["records", "generic", "mbe", "fashion"],  # data.sources.CATALOG_FORMATS (kept light to import)
        default="records",
        help="records: products JSONL from prepare-data; generic: catalog CSV/JSONL; mbe: MBE JSON; "
        "fashion: a products.csv + images/ directory",
    )
    p.add_argument("--on-bad-row", choices=["error", "skip"], default="error", help="bad rows: stop, or skip+count")


#: eval.index.INDEX_KINDS (kept light to import: tests/eval/test_index.py checks they agree)
INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


def cmd_index(args: argparse.Namespace) -> None:
    import os

    from ..eval.export import write_faiss, write_milvus
    from ..eval.index import resolve_kind

    records, _ = _load_catalog(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = _encoder(args, args.model).encode_products(records, desc="catalog")
    faiss_path = out / "catalog.faiss"
    write_faiss(embeddings, records, faiss_path, args.index)
    uri = args.milvus_uri or str(out / "milvus.db")
    count = write_milvus(embeddings, records, uri, args.collection, token=os.environ.get("MILVUS_TOKEN"))
    kind = resolve_kind(args.index, len(records))
    print(f"{len(records)} products, {embeddings.shape[1]}-d embeddings from {args.model}")
    print(f"  faiss ({kind}" + (", chosen by --index auto" if args.index == "auto" else "")
          + f"): {faiss_path} + {faiss_path.with_suffix('.ids.json').name}")  # fmt: skip
    print(f"  milvus: {count} entities in collection {args.collection!r} at {uri}")


def cmd_eval(args: argparse.Namespace) -> None:
    from ..eval.run import run_eval

    if args.adapter and len(args.model) > 1:
        raise MoonInputError("--adapter applies to one --model; evaluate adapters of several models one by one",
                             field="--adapter")  # fmt: skip
    records, pairs = _load_catalog(args)
    out = Path(args.out) if args.out else None
    cache = Path(args.cache_dir) if args.cache_dir else (out / "cache" if out else None)
    table = run_eval(args.model, records, out, pairs, index=args.index, batch_size=args.batch_size, cache_dir=cache,
                     adapters=args.adapter or (), device=args.device, dtype=args.dtype)  # fmt: skip
    print(f"\n{len(records)} products from {args.products}" + (f", {len(pairs)} queries" if pairs else ""))
    print(table)
    if out:
        print(f"\nresults: {out / 'eval.json'}")


def cmd_visualize(args: argparse.Namespace) -> None:
    from .visualize import attention_maps, plot_attention

    records, _ = _load_catalog(args)
    by_id = {record.product_id: record for record in records}
    missing = [product for product in args.product if product not in by_id]
    if missing:
        raise MoonInputError(f"products {missing} are not in the catalog", file=args.products, field="--product")
    encoder = _encoder(args, args.model)
    layers = None if args.layers == "last" else _layer_list(args.layers, encoder.model.config.text_config)
    for product in args.product:
        maps = attention_maps(encoder, by_id[product], layers)
        path = plot_attention(maps, by_id[product], Path(args.out) / f"attention_{product}.png")
        fields = ", ".join(f"{name} {len(positions)} tokens" for name, positions in maps.fields.items())
        print(f"{product}: {len(maps.views)} image views, {fields} -> {path}")


def _layer_list(spec: str, text_config) -> list[int]:
    if spec == "all":
        return list(range(text_config.num_hidden_layers))
    return [int(part) for part in spec.split(",")]


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DemoConfig, run_demo

    run_demo(
        DemoConfig(
            workdir=Path(args.workdir),
            catalog=Path(args.catalog or _development_data("fashion-catalog-dev", "--catalog")),
            street_photos=Path(args.street_photos or _development_data("street-photos", "--street-photos")),
            recipe=Path(args.recipe) if args.recipe else TINY_RECIPE,
            limit=args.limit,
            seeds=args.seeds,
            first_seed=args.seed,
            base_model=Path(args.model) if args.model else None,
            device=args.device,
            dtype=args.dtype,
            **({"variants": tuple(args.variants)} if args.variants else {}),
            **({"max_steps": args.max_steps} if args.max_steps else {}),
        )
    )


def _box_policy(args: argparse.Namespace):
    from ..detection.selection import BoxPolicy

    try:
        return BoxPolicy(score_threshold=args.score_threshold, max_crops=args.max_crops, rank_by=args.rank_by,
                         margin=args.margin, min_size_px=args.min_size_px, min_area_fraction=args.min_area_fraction,
                         fallback_full_image=not args.no_fallback)  # fmt: skip
    except ValueError as error:
        raise MoonInputError(str(error), field="box policy") from error


def cmd_detect(args: argparse.Namespace) -> None:
    from ..data.image_lists import dataset_images
    from ..detection.backend import BUNDLED_CHECKPOINT, BUNDLED_CONFIG, Detector
    from ..detection.store import detect_images

    if bool(args.config) != bool(args.checkpoint):
        raise MoonInputError("give both --config and --checkpoint, or neither (the bundled detector)", field="--config")
    policy = _box_policy(args)
    detector = Detector(args.config or BUNDLED_CONFIG, args.checkpoint or BUNDLED_CHECKPOINT, device=args.device,
                        trust_checkpoint=args.trust_checkpoint)  # fmt: skip
    images = dataset_images(args.dataset)
    report = detect_images(detector, images, policy, args.out, batch_size=args.batch_size, progress=not args.quiet,
                           on_bad_image=args.on_bad_image, min_image_side=args.min_image_side)  # fmt: skip
    print(f"detector {detector.config_path.name} + {detector.checkpoint_path.name} on {args.device}")
    print(report.summary())


def _detector_data_paths(args: argparse.Namespace) -> None:
    args.catalog = args.catalog or _development_data("fashion-catalog-dev", "--catalog")
    args.backgrounds = args.backgrounds or _development_data("street-photos", "--backgrounds")


def cmd_detector_build_data(args: argparse.Namespace) -> None:
    from ..detection.training.synth import build_dataset

    _detector_data_paths(args)
    written = build_dataset(args.catalog, args.backgrounds, args.out, num_train=args.num_train, num_val=args.num_val,
                            seed=args.seed, max_catalog=args.max_catalog)  # fmt: skip
    print(f"composited {args.num_train} train + {args.num_val} val images (seed {args.seed}) in {args.out}")
    for split, path in written.items():
        print(f"  {split}: {path}")


def cmd_detector_train(args: argparse.Namespace) -> None:
    import json

    from ..detection.training.synth import build_dataset
    from ..detection.training.train import ap50, train_detector

    data = Path(args.data) if args.data else Path(args.out) / "data"
    if not args.data:
        _detector_data_paths(args)
        build_dataset(args.catalog, args.backgrounds, data, num_train=args.num_train, num_val=args.num_val,
                      seed=args.seed, max_catalog=args.max_catalog)  # fmt: skip
    summary = train_detector(data, args.out, iters=args.iters, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             out_checkpoint=args.checkpoint)  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(
        f"trained {args.iters} iterations in {summary['seconds'] / 60:.1f} min; val bbox AP50 "
        f"{ap50(summary['metrics']):.3f}; checkpoint {summary['checkpoint']} ({summary['checkpoint_mb']} MB)"
    )


def _add_detection_commands(sub) -> None:
    """``detect`` (boxes for a dataset, cached by content) and ``detector build-data|train``."""
    p = sub.add_parser("detect", help="detect the core product of every image of a dataset (cached by content hash)")
    p.add_argument("--dataset", nargs="+", required=True,
                   help="swift embedding JSONL(s), products JSONL, catalog CSV or image directories")  # fmt: skip
    p.add_argument("--config", help="MMDetection config (default: the bundled product detector)")
    p.add_argument("--checkpoint", help="MMDetection checkpoint matching --config")
    p.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects in it (full mmengine files)")
    p.add_argument("--out", required=True, help="boxes JSONL; reruns append only images not detected yet")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument(
        "--on-bad-image", choices=["error", "skip"], default="error", help="unreadable image: stop, or skip+count"
    )
    p.add_argument("--min-image-side", type=int, default=32, help="smaller images keep the full image, undetected")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    group = p.add_argument_group("box policy")
    group.add_argument("--score-threshold", type=float, default=0.3)
    group.add_argument("--max-crops", type=int, default=1)
    group.add_argument("--rank-by", default="score*area*centrality", choices=["score", "area", "centrality",
                       "score*area*centrality"], help="how to pick the core product among detections")  # fmt: skip
    group.add_argument("--margin", type=float, default=0.05, help="box expansion, fraction of its size per side")
    group.add_argument("--min-size-px", type=float, default=8.0, help="drop boxes with a side below this")
    group.add_argument("--min-area-fraction", type=float, default=0.01, help="drop boxes smaller than this x image")
    group.add_argument("--no-fallback", action="store_true", help="no full-image crop when no box qualifies")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("detector", help="build the composited detection set, train the product detector")
    detector_sub = p.add_subparsers(dest="detector_command", required=True)
    for name, func, help_text in (
        ("build-data", cmd_detector_build_data, "composite catalog products onto street photos (COCO json)"),
        ("train", cmd_detector_train, "train the RTMDet product detector with mmengine's Runner (CPU-sized)"),
    ):
        q = detector_sub.add_parser(name, help=help_text)
        q.add_argument("--out", required=True, help="output directory (train: the work dir)")
        q.add_argument("--catalog", help="catalog photos on white (default: the development fashion catalog)")
        q.add_argument("--backgrounds", help="background photos (default: the development street photos)")
        q.add_argument("--num-train", type=int, default=3000, help="composited training images")
        q.add_argument("--num-val", type=int, default=300, help="composited validation images")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--max-catalog", type=int, help="use at most this many catalog photos per split (quick runs)")
        q.set_defaults(func=func)
        if name == "train":
            q.add_argument("--data", help="a built data set (default: build one into OUT/data)")
            q.add_argument("--iters", type=int, default=3000)
            q.add_argument("--batch-size", type=int, default=8)
            q.add_argument("--lr", type=float, default=0.004)
            q.add_argument("--checkpoint", help="stripped checkpoint path (default OUT/product_detector.pth)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moon-swift", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-tiny", help="write a tiny, real Qwen2.5-VL-based MOON model built locally")
    p.add_argument("out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="weight seed; the same seed gives identical weights")
    p.add_argument(
        "--as-base",
        choices=["qwen2_5_vl", "qwen2_vl"],
        help="write the dense base checkpoint (hub layout) instead of a MOON model, e.g. to try `upcycle`",
    )
    _add_moe_arguments(p)
    p.set_defaults(func=cmd_make_tiny)

    p = sub.add_parser("upcycle", help="turn a Qwen2.5-VL / Qwen2-VL checkpoint directory into a MOON checkpoint")
    p.add_argument("--base", required=True, help="base checkpoint directory (e.g. Qwen/Qwen2.5-VL-3B-Instruct)")
    p.add_argument("--out", required=True, help="output directory for the MOON checkpoint")
    _add_moe_arguments(p)
    p.add_argument("--noise", type=float, default=0.0, help="expert init noise, in units of each weight's std")
    p.add_argument("--seed", type=int, default=0, help="seed of the router init and the noise")
    _add_plan_arguments(p)
    p.set_defaults(func=cmd_upcycle)

    p = sub.add_parser("plan", help="parameters and training memory per GPU of a MOON model, from its config alone")
    p.add_argument("model", help="a base (Qwen2.5-VL / Qwen2-VL) or MOON checkpoint folder; only config.json is read")
    _add_moe_arguments(p)
    _add_plan_arguments(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("prepare-data", help="catalog (+ behaviour pairs) -> swift embedding rows + held-out products")
    p.add_argument("--catalog", required=True, help="the catalog: a file or directory, see --format")
    p.add_argument(
        "--format",
        choices=["fashion", "generic", "mbe", "records"],
        default="fashion",
        help="fashion: products.csv + images/; generic: catalog CSV/JSONL; mbe: MBE JSON; records: products JSONL",
    )
    p.add_argument("--pairs", help="behaviour pairs CSV/JSONL; without them, pairs are built from the catalog")
    p.add_argument("--catalog-pairs", default="title", help="kinds of catalog pairs: title,image,category")
    p.add_argument("--on-bad-row", choices=["error", "skip"], default="error", help="bad rows: stop, or skip+count")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--limit", type=int, help="read at most this many products")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction, split by product id")
    p.add_argument("--hard-negatives", type=int, default=0, help="explicit negatives per row (same category)")
    p.add_argument("--mine-with", help="MOON checkpoint to mine the hard negatives with (nearest other products)")
    p.add_argument(
        "--mine-search",
        choices=["exact", "ivf", "hnsw"],  # data.negatives.MINING_SEARCHES (kept light to import)
        default="exact",
        help="nearest-neighbour search for --mine-with: exact (faiss top-k, O(N^2)), ivf (approximate, a bounded "
        "scan per product: for millions) or hnsw (approximate)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the hard-negative draw")
    _add_model_arguments(p, what="--mine-with")
    p.set_defaults(func=cmd_prepare_data)

    p = sub.add_parser("photo-queries", help="photo (+ text) queries: catalog products pasted onto street photos")
    p.add_argument("--catalog", required=True, help="the catalog: a file or directory, see --format")
    p.add_argument("--format", choices=["fashion", "generic", "mbe", "records"], default="fashion")
    p.add_argument("--backgrounds", help="folder of background photos (default: the development street photos)")
    p.add_argument("--out", required=True, help="output directory: images/ and pairs.jsonl")
    p.add_argument("--kinds", default="image,multimodal", help="query kinds: image (photo), multimodal (photo + text)")
    p.add_argument("--limit", type=int, help="read at most this many products")
    p.add_argument("--val-fraction", type=float, default=0.1, help="as prepare-data: held-out products get unseen "
                   "backgrounds")  # fmt: skip
    p.add_argument("--on-bad-row", choices=["error", "skip"], default="error", help="bad rows: stop, or skip+count")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_photo_queries)

    p = sub.add_parser("check-data", help="validate swift embedding JSONL files row by row before training")
    p.add_argument("files", nargs="+", help="JSONL files in swift's embedding format")
    p.add_argument("--keep-going", action="store_true", help="report every bad row instead of stopping at the first")
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("eval", help="evaluate one or more MOON checkpoints side by side (retrieval, classification)")
    p.add_argument("--model", action="append", required=True, help="checkpoint directory (repeat to compare)")
    _add_catalog_arguments(p)
    p.add_argument("--pairs", help="behaviour pairs CSV/JSONL (query_text/query_image -> product_id)")
    p.add_argument("--cache-dir", help="embedding cache (default OUT/cache with --out; reruns skip encoding)")
    p.add_argument("--out", help="directory for eval.json")
    p.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="flat",
        help="faiss index: flat = exact (the default: exact metrics); auto, ivf, hnsw as for `index`",
    )
    _add_model_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("index", help="write catalog embeddings to a faiss index file and a Milvus collection")
    p.add_argument("--model", required=True, help="MOON checkpoint directory")
    _add_catalog_arguments(p)
    p.add_argument("--out", required=True, help="directory for catalog.faiss (and milvus.db for Milvus Lite)")
    p.add_argument(
        "--index",
        choices=INDEX_KINDS,
        default="auto",
        help="faiss index: auto (the default: flat = exact up to 100,000 products, ivf above), flat, ivf (4 sqrt(N) "
        "inverted lists of 8-bit codes, 16 searched, the best 2k re-ranked exactly) or hnsw (M 32, efSearch 64); "
        "README: approximate search",
    )
    p.add_argument(
        "--milvus-uri", help="Milvus server URI (default: Milvus Lite file OUT/milvus.db); token: $MILVUS_TOKEN"
    )
    p.add_argument("--collection", default="moon_products", help="Milvus collection (recreated)")
    _add_model_arguments(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("visualize", help="heatmaps of how title / category / attribute tokens attend to image patches")
    p.add_argument("--model", required=True, help="MOON checkpoint directory")
    _add_catalog_arguments(p)
    p.add_argument("--product", action="append", required=True, help="product id (repeat for several)")
    p.add_argument("--layers", default="last", help="decoder layers to average: 'last', 'all' or '0,3'")
    p.add_argument("--out", default="attention", help="directory for attention_<product>.png")
    _add_model_arguments(p)
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser(
        "demo",
        help="the ablation study: MOON and one-change variants trained with `swift sft`, "
        "evaluated with baselines on held-out products",
    )
    p.add_argument("--workdir", default="runs/demo", help="where models, data and results go")
    p.add_argument("--catalog", help="fashion catalog directory (default: the development catalog, see README)")
    p.add_argument(
        "--street-photos",
        help="street photos with labels.csv: backgrounds and category queries (default: the development street photos)",
    )
    p.add_argument("--recipe", help=f"swift sft recipe to train with (default {TINY_RECIPE})")
    p.add_argument("--model", help="Qwen2.5-VL / Qwen2-VL checkpoint to upcycle (default: a tiny one built here)")
    p.add_argument("--limit", type=int, help="products to use, train + held-out (default: the whole catalog)")
    p.add_argument(
        "--max-steps",
        type=_at_least(1),
        help="training steps of each variant (default: what fits one seed in 15 minutes on 2 cores)",
    )
    p.add_argument("--seeds", type=_at_least(1), default=1, help="seeds to run (mean +- std and separation with 2+)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the first seed: of the base model, the query kinds drawn, the hard negatives and swift's training order",
    )
    p.add_argument("--device", help="device evaluation encodes on (default: cuda when there is one)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="evaluation dtype")
    p.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="variants to train (default: the study's; 'queue split' and 'queue fifo' compare queue modes)",
    )
    p.set_defaults(func=cmd_demo)
    _add_detection_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("moon_swift").setLevel(logging.INFO)
    log_level = os.environ.get("LOG_LEVEL")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # swift's loader logs every setting at INFO
    try:
        args.func(args)
    except MoonInputError as error:
        print(f"moon-swift {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:  # called in-process (tests, scripts), the caller's environment is left as it was
        if log_level is None:
            os.environ.pop("LOG_LEVEL", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
