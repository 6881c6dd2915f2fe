import json

from moon_swift.integrations.swift.hub import model_card, upload_files


def test_card_describes_moe_and_the_latest_swift_eval_result(tiny_moon_dir, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    config = json.loads((tiny_moon_dir / "config.json").read_text())
    config.update(moe_layers=[0, 1], num_experts=4, moe_top_k=2, guided_experts=True, moe_aux_loss_coef=0.01)
    (checkpoint / "config.json").write_text(json.dumps(config))
    subset = {"name": "title->product", "score": 0.5, "num": 7}
    report = {
        "dataset_name": "moon_retrieval",
        "metrics": [{"name": "mean_recall@1", "categories": [{"subsets": [subset]}]}],
    }
    old = {**report, "metrics": [{"name": "mean_recall@1", "categories": [{"subsets": [{**subset, "score": 0.1}]}]}]}
    (checkpoint / "eval_result.jsonl").write_text(
        json.dumps({"Native": [old]}) + "\n" + json.dumps({"Native": [report]})
    )
    card = model_card(checkpoint, "me/m")
    assert "guided MoE in decoder layers `[0, 1]`: 4 routed experts, top-2" in card
    assert "| moon_retrieval | title->product | mean_recall@1 | 0.5000 | 7 |" in card and "0.1000" not in card
    assert [p.name for p in upload_files(checkpoint)] == ["config.json"]
