"""The three functions of other libraries moon-swift wraps (README "Patches"): these fail when the wrapped
function changes, so a new swift or evalscope release cannot silently break the wrappers."""

import dataclasses
import inspect


def test_swift_export_run_still_uploads_the_folder_the_moon_wrapper_stages():
    from swift.arguments import ExportArguments
    from swift.pipelines.export.export import SwiftExport

    import moon_swift.integrations.swift.hub as hub

    hub.patch_swift_export()
    assert SwiftExport.run.moon_publish
    original = SwiftExport.run.__wrapped__
    assert list(inspect.signature(original).parameters) == ["self"]
    source = inspect.getsource(original)
    assert "model_dir = args.adapters and args.adapters[0] or args.model_dir" in source  # what the stage replaces
    assert "args.hub.push_to_hub(" in source
    fields = {field.name for field in dataclasses.fields(ExportArguments)}
    assert {"push_to_hub", "merge_lora", "adapters", "hub_model_id", "hub_token", "model_type"} <= fields


def test_evalscope_opencompass_dataset_listing_is_still_what_swift_eval_calls():
    from evalscope.backend.opencompass import OpenCompassBackendManager
    from swift.arguments import EvalArguments

    from moon_swift.integrations.swift.eval_benchmarks import tolerate_missing_opencompass

    tolerate_missing_opencompass()
    wrapped = inspect.getattr_static(OpenCompassBackendManager, "list_datasets").__func__
    assert wrapped.moon_tolerant
    assert list(inspect.signature(wrapped.__wrapped__).parameters) == ["return_details"]
    assert "OpenCompassBackendManager.list_datasets()" in inspect.getsource(EvalArguments.list_eval_dataset)


def test_swift_model_info_still_reads_the_config_where_the_moon_wrapper_refuses_remote_code():
    from swift.model import model_meta

    from moon_swift.integrations.swift.loader import refuse_remote_code_for_moon

    refuse_remote_code_for_moon()
    assert model_meta._get_model_info.moon_native
    original = model_meta._get_model_info.__wrapped__
    assert list(inspect.signature(original).parameters) == ["model_dir", "model_type", "quantization_config"]
    source = inspect.getsource(original)
    assert "AutoConfig.from_pretrained(model_dir, trust_remote_code=True)" in source  # what the wrapper swaps
    assert "with trust_remote_code=True" in source  # the warning it drops for moon folders
    assert "_get_model_info(" in inspect.getsource(model_meta.get_model_info_meta)
