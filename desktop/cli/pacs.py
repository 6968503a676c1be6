"""Know the hospital's PACS: add a node, test it (C-ECHO), search its studies (C-FIND).

Examples
--------
  pneumofl pacs add main --ae ORTHANC --host pacs.hospital.example --port 4242
  pneumofl pacs echo main
  pneumofl pacs find main --patient 12345 --date 20261201-20261205 --modality CR,DX
  pneumofl predict --run 12 --pacs main --study STUDY_UID --store-results

The PACS must know this workstation's AE title (--our-ae, default PNEUMOFL) and address before it answers.
Nodes are kept in pacs.json in the user's configuration folder, readable by the user only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from desktop.cli.common import add_db_option, format_table, open_db


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``pacs add|list|remove|echo|find|settings|empty-cache``."""
    p = commands.add_parser(
        "pacs",
        help="the hospital's PACS: add, test, search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add or change a PACS node")
    add.add_argument("name", metavar="NAME", help="what you call it, e.g. main")
    add.add_argument("--ae", required=True, metavar="AE_TITLE", help="the PACS's AE title (the called title)")
    add.add_argument("--host", required=True, help="its host name or address")
    add.add_argument("--port", required=True, type=int, help="its DICOM port")
    add.add_argument(
        "--our-ae", default="PNEUMOFL", metavar="AE_TITLE", help="this workstation's AE title (default PNEUMOFL)"
    )
    add.add_argument("--tls-ca", default="", metavar="FILE", help="the PACS's CA certificate: talk DICOM over TLS")
    add.add_argument(
        "--tls-cert", default="", metavar="FILE", help="this workstation's certificate, when the PACS asks"
    )
    add.add_argument("--tls-key", default="", metavar="FILE", help="the key of --tls-cert")
    add.add_argument(
        "--retrieve",
        choices=("get", "move"),
        default="get",
        help="C-GET (default), or C-MOVE to this workstation's port (pacs settings --move-port; the PACS must know it)",
    )
    add.set_defaults(func=run_add)
    verbs.add_parser("list", help="the known PACS nodes").set_defaults(func=run_list)
    remove = verbs.add_parser("remove", help="forget a PACS node")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=run_remove)
    echo = verbs.add_parser("echo", help="check that a PACS answers and accepts this workstation (C-ECHO)")
    echo.add_argument("name", metavar="NAME")
    echo.set_defaults(func=run_echo)
    find = verbs.add_parser("find", help="search a PACS's studies (C-FIND)")
    find.add_argument("name", metavar="NAME")
    find.add_argument("--patient", default="", metavar="ID", help="patient ID")
    find.add_argument("--patient-name", default="", metavar="NAME", help="patient name; * matches anything (Doe^*)")
    find.add_argument("--accession", default="", metavar="NUMBER", help="accession number")
    find.add_argument("--date", default="", metavar="DATES", help="study date: 20261201, or a range 20261201-20261205")
    find.add_argument("--modality", default="", metavar="LIST", help="modalities in the study, e.g. CR,DX")
    add_db_option(find)
    find.set_defaults(func=run_find)
    settings = verbs.add_parser(
        "settings", help="show or change the UID root, whether retrieved images are kept, the C-MOVE port"
    )
    settings.add_argument("--uid-root", metavar="ROOT", help="the site's DICOM UID root for the results it writes")
    settings.add_argument(
        "--keep-retrieved", choices=("yes", "no"), help="keep retrieved studies in the cache after reading (default no)"
    )
    settings.add_argument(
        "--move-port", type=int, metavar="PORT", help="where the PACS sends images with C-MOVE (default 11112)"
    )
    settings.set_defaults(func=run_settings)
    verbs.add_parser("empty-cache", help="remove every retrieved study still in the cache").set_defaults(
        func=run_empty_cache
    )


def run_add(args: argparse.Namespace) -> int:
    """Add or replace a node."""
    from core.pacs.nodes import load_settings, new_node, save_settings

    node = new_node(
        args.name,
        args.ae,
        args.host,
        args.port,
        args.our_ae,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        retrieve=args.retrieve,
    )
    settings = load_settings()
    verb = "Changed" if args.name in settings.nodes else "Added"
    settings.nodes[args.name] = node
    path = save_settings(settings)
    print(f"{verb} PACS {node.name} ({node.address}, we are {node.our_ae}) in {path}.")
    if node.retrieve == "move":
        print(
            f"It retrieves with C-MOVE: the PACS must know {node.our_ae} at this workstation's address, "
            f"port {settings.move_port}."
        )
    print(f"Test it: pneumofl pacs echo {node.name}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the known nodes."""
    from core.pacs.nodes import load_settings

    settings = load_settings()
    if not settings.nodes:
        print("No PACS yet. Add one: pneumofl pacs add NAME --ae AE_TITLE --host HOST --port PORT")
        return 0
    rows = [
        {
            "name": n.name,
            "ae": n.ae_title,
            "host": n.host,
            "port": n.port,
            "our ae": n.our_ae,
            "tls": "yes" if n.tls_ca else "no",
            "retrieve": "C-MOVE" if n.retrieve == "move" else "C-GET",
        }
        for n in settings.nodes.values()
    ]
    print(format_table(rows, ["name", "ae", "host", "port", "our ae", "tls", "retrieve"]))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Forget a node."""
    from core.pacs.nodes import load_settings, save_settings

    settings = load_settings()
    settings.node(args.name)
    del settings.nodes[args.name]
    save_settings(settings)
    print(f"Removed PACS {args.name}.")
    return 0


def run_echo(args: argparse.Namespace) -> int:
    """C-ECHO a node."""
    from core.pacs.network import echo
    from core.pacs.nodes import load_settings

    node = load_settings().node(args.name)
    echo(node)
    print(f"PACS {node.name} ({node.address}) answered and accepts {node.our_ae}.")
    return 0


def run_find(args: argparse.Namespace) -> int:
    """C-FIND studies, print them, audit the query."""
    from core.pacs.network import StudyQuery
    from core.pacs.nodes import load_settings
    from core.pacs.study import search

    query = StudyQuery.parse(args.patient, args.patient_name, args.accession, args.date, args.modality)
    node = load_settings().node(args.name)
    db = open_db(args)
    try:
        studies = search(db, node, query)
    finally:
        db.close()
    if not studies:
        print(f"No study on PACS {node.name} matches.", file=sys.stderr)
        return 0
    rows = [
        {
            "study": s.study_uid,
            "date": s.date,
            "patient": s.patient_id,
            "accession": s.accession,
            "modalities": ",".join(s.modalities),
            "images": s.images,
            "description": s.description,
        }
        for s in studies
    ]
    print(format_table(rows, ["study", "date", "patient", "accession", "modalities", "images", "description"]))
    print(
        f"{len(studies)} study(ies). Read one: pneumofl predict --run RUN_ID --pacs {node.name} --study STUDY_UID",
        file=sys.stderr,
    )
    return 0


def run_settings(args: argparse.Namespace) -> int:
    """Show or change the UID root and cache policy."""
    from core.pacs.nodes import check_move_port, check_uid_root, load_settings, save_settings

    settings = load_settings()
    if args.uid_root is not None or args.keep_retrieved is not None or args.move_port is not None:
        changes: dict[str, object] = {}
        if args.move_port is not None:
            changes["move_port"] = check_move_port(args.move_port)
        if args.uid_root is not None:
            changes["uid_root"] = check_uid_root(args.uid_root)
        if args.keep_retrieved is not None:
            changes["keep_retrieved"] = args.keep_retrieved == "yes"
        settings = dataclasses.replace(settings, **changes)
        save_settings(settings)
    print(f"UID root of the results: {settings.uid_root}")
    print(f"Retrieved studies kept after reading: {'yes' if settings.keep_retrieved else 'no'}")
    print(f"C-MOVE port (where a PACS sends images): {settings.move_port}")
    return 0


def run_empty_cache(args: argparse.Namespace) -> int:
    """Remove the retrieved studies kept in the cache."""
    from core.pacs.study import cache_root, empty_cache

    removed = empty_cache()
    print(f"Removed {removed} retrieved study folder(s) from {cache_root()}.")
    return 0
