import pytest

from tfseg.data.synthetic import write_polyp_dataset

# Tests of a minute or more on 2 cores (pytest --durations, 2026-12-02). They run first, so that `make test`'s two
# workers (pytest-xdist) end together rather than one waiting for the other's last long test.
SLOW = (
    "test_cli_trains_both_stages_resumes_exports_and_evaluates",
    "test_cli_trains_exports_and_resumes",
    "test_every_format_is_written_with_metadata",  # its module's export fixture
    "test_mirrored_step_equals_data_parallel_reference",
    "test_multiworker_training_with_two_local_workers",
    "test_inference_commands_take_the_preset_folder",
    "test_every_model_family_loads_from_a_keras_file_in_a_fresh_process",
    "test_resume_ends_where_an_uninterrupted_run_ends",
    "test_a_few_steps_of_each_stage_lower_the_loss",
    "test_loop_calls_keras_callbacks",
)


# Modules whose tests share a slow module-scoped fixture (an exported or trained model): one worker runs all of a
# module's tests, so that the fixture is built once (one-test-at-a-time scheduling built test_inference's export
# three times, 65 s each).
SHARED_FIXTURE_MODULES = (
    "test_convert.py",
    "test_convert_hrnet.py",
    "test_earnet.py",
    "test_inference.py",
    "test_models.py",
    "test_presets.py",
    "test_quantization.py",
)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope`: the modules of SHARED_FIXTURE_MODULES as one unit each, every other test alone, in
    collection order (with `--no-loadscope-reorder`). pytest-xdist's own `loadgroup` would do this with marks,
    but it renames items through `item._nodeid`, which pytest 9 no longer reads."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::")[0]
            return module if module.rsplit("/", 1)[-1] in SHARED_FIXTURE_MODULES else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items):
    """The slow tests first, in SLOW's order; the rest keep theirs."""
    rank = {name: index for index, name in enumerate(SLOW)}
    items.sort(key=lambda item: rank.get(item.originalname, len(SLOW)))


@pytest.fixture(scope="session")
def polyp_dir(tmp_path_factory):
    """A small synthetic polyp dataset (images/ + masks/) shared by the training tests."""
    return str(write_polyp_dataset(str(tmp_path_factory.mktemp("polyps")), 24, size=(96, 96), seed=0))
