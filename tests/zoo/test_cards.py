"""Model cards and the README zoo table are generated from the catalog and never drift from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from selfsup_zoo import cards, catalog
from selfsup_zoo.cards import vocabulary
from selfsup_zoo.hub_folder import write_hub_folder
from selfsup_zoo.weights import file_sha256

ROOT = Path(__file__).resolve().parents[2]
FIX = "run `python -m selfsup_zoo.cards` and commit the result"


def _card_path(entry: catalog.CatalogEntry) -> Path:
    return ROOT / cards.CARDS_DIR / f"{entry.name}.md"


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n"), "a model card must open with YAML front matter"
    block, sep, _ = text[4:].partition("\n---\n")
    assert sep, "the YAML front matter is not closed by '---'"
    return yaml.safe_load(block)


def test_committed_cards_and_readme_table_match_the_catalog():
    problems = cards.drifted(ROOT)
    assert not problems, f"generated files drifted from the catalog ({FIX}):\n" + "\n".join(
        problems
    )


def test_every_card_has_valid_front_matter_with_its_licence():
    for entry in catalog.CATALOG.values():
        text = _card_path(entry).read_text(encoding="utf-8")
        meta = _front_matter(text)
        assert meta["library_name"] == "timm"
        assert meta["license"] == entry.license
        assert meta["license"] == ("mit" if entry.method == "care" else "cc-by-nc-sa-4.0")
        assert {"image-feature-extraction", "timm", "self-supervised", entry.method} <= set(
            meta["tags"]
        )
        assert meta["datasets"] == ["imagenet-1k"]
        # huggingface_hub parses model-index into EvalResults and rejects malformed metadata.
        card = ModelCard(text)
        assert card.data.license == entry.license
        reported = sorted((r.metric_type, r.metric_value) for r in card.data.eval_results)
        assert reported == sorted((vocabulary.METRICS[r.metric][1], r.value) for r in entry.results)
        assert {r.source_url for r in card.data.eval_results} <= {
            "https://github.com/ChongjianGE/CARE",
            "https://github.com/MCG-NKU/SERE",
            "https://github.com/LUSSeg/ImageNetSegModel",
        }


def test_every_protocol_and_metric_of_the_catalog_has_a_description():
    for entry in catalog.CATALOG.values():
        for result in entry.results:
            assert result.protocol in vocabulary.PROTOCOLS, result.protocol
            assert result.metric in vocabulary.METRICS, result.metric


def test_results_are_quoted_with_protocol_and_source_at_published_precision():
    text = _card_path(catalog.CATALOG["care_wide_resnet50_2.in1k_ep200"]).read_text()
    # 75.00 and 91.50 are published with two decimals; a float would print 75.0 / 91.5.
    assert "| top-1 | 75.00 | " + catalog.CARE_LINEAR_PROTOCOL in text
    assert "CARE official README (ChongjianGE/CARE @3187afb)" in text
    sere = _card_path(catalog.CATALOG["sere_vit_small.in1k_ep100"]).read_text()
    assert "| top-1 | 81.5 | " + catalog.SERE_FINETUNE_PROTOCOL in sere
    assert "| mIoU val | 41.0 |" in sere


def test_sere_cards_quote_both_upstream_licence_statements():
    for name in ("sere_vit_small.in1k_ep100", "sere_vit_base.in1k_ep100"):
        text = _card_path(catalog.CATALOG[name]).read_text()
        assert "`LICENSE` file" in text and "**CC BY-NC 4.0**" in text
        assert "README" in text and "**CC BY-NC-SA 4.0**" in text
        assert "non-commercial use only" in text


def test_care_cards_carry_licence_and_disambiguation():
    for entry in catalog.CATALOG.values():
        if entry.method != "care":
            continue
        text = _card_path(entry).read_text()
        assert "MIT" in text
        assert "CARE Transformer" in text and "CVPR 2025" in text
        assert "arXiv:2110.05340" in text and "eprint        = {2110.05340}" in text


def test_notes_for_the_wide_resnet_the_classifier_and_sere_pooling():
    wide = _card_path(catalog.CATALOG["care_wide_resnet50_2.in1k_ep100"]).read_text()
    assert '"ResNet-50 (2x)"' in wide and "`wide_resnet50_2`" in wide and "inferred" in wide
    lincls = _card_path(catalog.CATALOG["care_resnet50.in1k_ep100_lincls"]).read_text()
    assert "BatchNorm1d(1000)" in lincls and "folded" in lincls
    assert ModelCard(lincls).data.pipeline_tag == "image-classification"
    sere = _card_path(catalog.CATALOG["sere_vit_base.in1k_ep100"]).read_text()
    assert "pooling" in sere and "not stated upstream" in sere
    assert "eprint        = {2206.05184}" in sere and "TPAMI.2023.3309979" in sere
    # The README's R152 top-5 93.63 appears at 200 and 400 epochs: flagged, quoted as published.
    r152 = _card_path(catalog.CATALOG["care_resnet152.in1k_ep200"]).read_text()
    assert "`care_resnet152.in1k_ep400`" in r152 and "quoted as published" in r152


def test_unpublished_cards_say_so_and_give_the_command():
    for entry in catalog.CATALOG.values():
        text = _card_path(entry).read_text()
        if entry.sha256 is not None:
            assert entry.sha256 in text
            continue
        assert "**The weights are not published yet**" in text
        commands = [c for c in (cards.convert_command(entry), cards.regenerate_command(entry)) if c]
        assert commands, entry.name
        for command in commands:
            assert command in text
        if entry.upstream == catalog.OFFICIAL:
            assert f"python -m selfsup_zoo.convert {entry.method} " in text
            assert f"--checkpoint {entry.name} --install" in text
        else:
            assert f"-m selfsup_zoo.training.reproduce {entry.recipe}" in text


def test_card_with_hash_and_provenance_for_regenerated_weights():
    entry = catalog.CATALOG["care_resnet101.in1k_ep400"]
    digest = "0123456789abcdef" * 4
    provenance = {
        "recipe": entry.recipe,
        "commit": "1a2b3c4",
        "world_size": 16,
        "wall_time_h": 61.5,
    }
    text = cards.render_model_card(entry, sha256=digest, provenance=provenance)
    assert digest in text and "not published yet" not in text
    assert "| commit | `1a2b3c4` |" in text and "| world_size | `16` |" in text
    assert "| wall_time_h | `61.5` |" in text
    assert "not released" in text and f"recipe `{entry.recipe}`" in text
    assert _front_matter(text)["license"] == "mit"


def test_generic_card_for_weights_outside_the_catalog():
    text = cards.render_model_card(
        None,
        sha256=None,
        provenance={"recipe": "care_smoke", "method": "care", "world_size": 1},
        architecture="resnet18",
        model_args={"num_classes": 0},
    )
    meta = _front_matter(text)
    assert meta["library_name"] == "timm" and meta["license"] == "other"
    assert "care" in meta["tags"]
    assert "`resnet18` with `num_classes=0`" in text and "11,176,512" in text
    assert "| recipe | `care_smoke` |" in text
    assert "not** a catalog checkpoint" in text
    ModelCard(text)  # valid metadata for the Hub
    with pytest.raises(ValueError, match="architecture"):
        cards.render_model_card(None, sha256=None)


def test_generic_card_counts_the_parameters_of_the_weights_it_describes(tmp_path):
    """A folder of headless resnet18 weights (num_classes=0, not a model_args entry) is described
    with the 11,176,512 parameters it holds, not timm's default 1000-class model (11,689,512)."""
    import timm

    weights = timm.create_model("resnet18", num_classes=0).state_dict()
    assert (
        sum(v.numel() for k, v in weights.items() if "running" not in k and "num_batches" not in k)
        == 11_176_512
    )
    folder = write_hub_folder(
        tmp_path / "r18", weights, architecture="resnet18", provenance={"method": "care"}
    )
    text = (folder.path / "README.md").read_text()
    assert "11,176,512" in text and "11,689,512" not in text


def test_readme_table_has_one_row_per_checkpoint_between_the_markers():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(cards.TABLE_START) : readme.index(cards.TABLE_END)]
    rows = [line for line in section.splitlines() if line.startswith("| [")]
    assert [row.split("]")[0][3:] for row in rows] == list(catalog.CATALOG)
    r50 = rows[0]
    assert "`resnet50`" in r50 and "| 100 |" in r50
    assert "top-1 72.02, top-5 90.02 (IN-1k linear)" in r50
    assert "official release" in r50 and "not yet" in r50 and "| mit |" in r50
    assert "cc-by-nc-sa-4.0" in rows[-1] and "top-1 83.7 (IN-1k fine-tune)" in rows[-1]
    # The hand-written part of the README is kept.
    assert readme.startswith("# selfsup-zoo\n")


def test_readme_table_is_appended_when_missing_and_replaced_in_place():
    fresh = cards.replace_zoo_table("# title\n\ntext\n")
    assert fresh.startswith("# title\n\ntext\n\n" + cards.TABLE_START)
    stale = f"intro\n{cards.TABLE_START}\nold\n{cards.TABLE_END}\noutro\n"
    assert cards.replace_zoo_table(stale) == f"intro\n{cards.render_zoo_table()}\noutro\n"
    with pytest.raises(ValueError, match="unbalanced"):
        cards.replace_zoo_table(f"{cards.TABLE_END} {cards.TABLE_START}")


def test_check_lists_drift_and_write_repairs_it(tmp_path, capsys):
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / cards.CARDS_DIR, tmp_path / cards.CARDS_DIR)
    assert cards.main(["--check", "--root", str(tmp_path)]) == 0
    card_dir = tmp_path / cards.CARDS_DIR
    (card_dir / "care_resnet50.in1k_ep200.md").write_text("edited by hand\n")
    (card_dir / "sere_vit_base.in1k_ep100.md").unlink()
    (card_dir / "care_resnet18.in1k_ep1.md").write_text("no such checkpoint\n")
    capsys.readouterr()
    assert cards.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "model_cards/care_resnet50.in1k_ep200.md: differs from the catalog" in out.out
    assert "model_cards/sere_vit_base.in1k_ep100.md: missing" in out.out
    assert "model_cards/care_resnet18.in1k_ep1.md: no such checkpoint in the catalog" in out.out
    assert "python -m selfsup_zoo.cards" in out.err
    assert cards.main(["--root", str(tmp_path)]) == 0
    assert not (card_dir / "care_resnet18.in1k_ep1.md").exists()
    assert cards.main(["--check", "--root", str(tmp_path)]) == 0
    assert cards.main(["--check", "--root", str(tmp_path / "nowhere")]) == 2


def test_hub_folder_readme_is_the_card_with_the_folder_hash(tmp_path):
    import timm
    from safetensors.torch import load_file

    weights = timm.create_model("resnet50", num_classes=0).state_dict()
    provenance = {
        "recipe": "care_resnet50.in1k_ep200",
        "commit": "9f8e7d6",
        "world_size": 8,
        "wall_time_h": 20.5,
    }
    folder = write_hub_folder(
        tmp_path / "out",
        weights,
        architecture="resnet50",
        checkpoint="care_resnet50.in1k_ep200",
        provenance=provenance,
    )
    readme = folder.readme_path.read_text(encoding="utf-8")
    entry = catalog.CATALOG["care_resnet50.in1k_ep200"]
    assert readme == cards.render_model_card(
        entry, sha256=folder.sha256, provenance=provenance, architecture="resnet50", model_args={}
    )
    assert file_sha256(folder.weights_path) in readme
    assert "| commit | `9f8e7d6` |" in readme and "not published yet" not in readme
    assert ModelCard(readme).data.license == "mit"
    assert set(load_file(str(folder.weights_path))) == set(weights)
