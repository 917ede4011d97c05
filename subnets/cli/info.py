"""``subnets info NAME``: parameters, MACs, bytes and activation memory per channel group."""

from __future__ import annotations

import argparse

from subnets.cli._output import result


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="cost report of a zoo model (per channel group)",
                       description="Print a zoo model's MACs, parameters, bytes and peak "
                                   "activation memory, in total and per channel group.")
    p.add_argument("name", help="zoo model name (e.g. ds-cnn-s); 'list' lists them")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the model's usual data set's)")
    p.add_argument("--input-shape", default=None, help="e.g. 28,28,1 (default: the model's)")
    p.add_argument("--norm", default=None, choices=["batch", "group", "instance", "none"])
    p.add_argument("--width", type=float, default=None,
                   help="report at this fraction of every free group's width")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(args) -> int:
    from subnets import cost, zoo

    if args.name == "list":
        result(args, {"models": list(zoo.NAMES)})
        if not args.json:
            print("\n".join(zoo.NAMES))
        return 0
    shape = tuple(int(s) for s in args.input_shape.split(",")) if args.input_shape else None
    net = zoo.create(args.name, num_classes=args.num_classes, input_shape=shape, norm=args.norm)
    widths = None
    if args.width is not None:
        if not 0 < args.width <= 1:
            raise ValueError(f"--width must be in (0, 1], got {args.width}")
        widths = {g.name: max(1, round(g.size * args.width)) for g in net.graph.free}
    report = cost.summary(net, widths)
    result(args, report)
    if args.json:
        return 0
    norm = f", norm={report['norm']}" if report.get("norm") else ""
    print(f"{report['model']}: input {tuple(report['input_shape'])}, "
          f"{report['num_classes']} classes{norm}")
    print(f"  MACs {report['macs']:,}   params {report['params']:,}   "
          f"float32 {report['bytes_float32']:,} B   int8 {report['bytes_int8']:,} B   "
          f"peak activations {report['activation_bytes_float32']:,} B")
    print(f"  {'group':<10}{'width':>7}{'size':>7}{'members':>9}{'MACs touched':>16}")
    for g in report["groups"]:
        tag = " (fixed)" if g["fixed"] else ""
        print(f"  {g['name']:<10}{g['width']:>7}{g['size']:>7}{g['members']:>9}"
              f"{g['macs_touched']:>16,}{tag}")
    return 0
