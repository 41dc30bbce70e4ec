"""Gallery pictures from the raw store (tasks/stored_images.pictures): one per name, None where decoding fails."""

import pytest

from tasks import images, stored_images
from tasks.ingest import stage as ingest


def test_an_image_that_cannot_be_decoded_is_none_and_reported(shrunk_config, monkeypatch: pytest.MonkeyPatch):
    config, paths = shrunk_config
    manifest = ingest.run(config.ingest, paths)
    names = manifest["path"].tolist()[:3]
    original = images.decode_array

    def decode(data, name, *arguments, **options):
        if name == names[1]:
            raise images.ImageError(name, "corrupt", "broken")
        return original(data, name, *arguments, **options)

    monkeypatch.setattr(images, "decode_array", decode)
    reported = []
    found = stored_images.pictures(paths.raw, paths.manifest, names, 24, config.ingest.max_pixels,
                                   lambda name, error: reported.append(name))
    assert [picture is None for picture in found] == [False, True, False]
    assert found[0].shape == (24, 24, 3) and reported == [names[1]]
