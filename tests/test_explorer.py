"""The explorer page: its encoder and decoder compute what the model's do (the published MLP, a
convolutional model); it shows the test images the dataset's numbering names, with evaluate.py's
noise; every address is checked and read back; it says what it shows; it fits laptops and phones and
passes axe-core. In real headless Chromium (Debian's `chromium`, driven by playwright, a development
tool): one browser for the whole module, a fresh tab per test.
"""

import html
import json
import math
import re
import shutil

import pytest
import torch
from torch import nn

import explorer
from checkpoints import load_checkpoint
from conftest import REAL_DATA_DIR, requires_real_data
from dae import DenoisingAutoencoder
from data import load_fashion_mnist, standard_test_noise
from evaluate import RunData, run_data
from runs import CHECKPOINT_FILE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for every test here; skipped, with the reason, where it or playwright is missing."""
    if CHROMIUM is None:
        pytest.skip("no Chromium here: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright here: pip install playwright")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=explorer.CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


WINDOW = {"width": 1200, "height": 900}


def new_tab(browser):
    page = browser.new_page(viewport=WINDOW)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return page


@pytest.fixture(scope="module")
def shared_tab(browser):
    page = new_tab(browser)
    yield page
    page.close()


@pytest.fixture
def tab(shared_tab):
    """One tab for the module, blank and of the usual size again for each test: a new tab costs a
    renderer's start (0.2 s), and each test loads the page afresh anyway."""
    shared_tab.goto("about:blank")
    shared_tab.set_viewport_size(WINDOW)
    shared_tab.errors = []
    return shared_tab


@pytest.fixture
def clock_tab(browser):
    """A tab of its own whose timers run in the test's time, not the wall's: tab.clock.run_for(ms)."""
    page = new_tab(browser)
    page.clock.install()  # it stays with the tab, so no other test may use this one
    yield page
    page.close()


def open_page(tab, path, fragment: str = ""):
    if tab.url != "about:blank":
        tab.goto("about:blank")  # a new load, not a change of the address in the open page
    tab.goto(f"{path.as_uri()}{fragment}")
    tab.wait_for_function("document.documentElement.dataset.state === 'ready'")
    return tab


def change_address(tab, fragment: str, view: str):
    """What a learner does who edits the part after # in an open tab; returns once the page shows `view`."""
    tab.evaluate(f"location.hash = {json.dumps(fragment or '#')}")
    tab.wait_for_function(f"document.getElementById('view').textContent.startsWith({json.dumps('Showing: ' + view)})")


def shown(tab) -> dict:
    """What the page says of its view: the notice of a bad address (or None), what is shown, the code."""
    notice = tab.locator("#notice")
    return {"notice": notice.inner_text() if notice.is_visible() else None, "view": tab.inner_text("#view"),
            "code": tab.evaluate("Array.from(code)")}


@pytest.fixture(scope="module")
def page(trained_tiny_run, tmp_path_factory):
    """The tiny run's page, written by explorer.py into a copy of the run that the tests here only read."""
    run_dir = tmp_path_factory.mktemp("explorer") / "run"
    shutil.copytree(trained_tiny_run / "run", run_dir)
    try:
        explorer.main(["--run-dir", str(run_dir), "--data-dir", str(trained_tiny_run / "data")])
    except SystemExit as exit_info:  # a fork's model the page cannot run: its tests have nothing to open
        if "no explorer page" not in str(exit_info.code):
            raise
        pytest.skip(f"no page for this model: {exit_info.code}")
    return run_dir / "explorer.html"


# ---- The page's decoder is the model's ----

@torch.no_grad()
def assert_draws_as_the_model(tab, path, model, seed=0):
    codes = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(seed)) * 3
    open_page(tab, path)
    for code in codes.tolist():
        change_address(tab, "#z=" + ",".join(f"{value:.4f}" for value in code), "a code from the link")
        drawn = torch.tensor(tab.evaluate("readBack('decoded')"), dtype=torch.float32)
        expected = 255 * model.decode(torch.tensor([[round(value, 4) for value in code]])).flatten()
        assert (drawn - expected).abs().max() <= 1, "the page's decoder differs from the model's by over 1/255"
    assert tab.errors == []


def test_the_published_model_gets_a_page_that_runs_both_halves(tiny_run, tmp_path):
    """Without the `page` fixture, which skips where a fork's model gets no page."""
    torch.manual_seed(0)
    text = tiny_page_of(DenoisingAutoencoder(8).eval(), tiny_run, tmp_path).read_text()
    data = json.loads(re.search(r"const RUN = (.*);\n", text).group(1))
    assert data["encoder_problem"] is None and data["encoder"] and data["decoder"]


def test_the_page_draws_what_the_runs_decoder_draws(tab, page):
    model, _ = load_checkpoint(page.parent / CHECKPOINT_FILE)
    assert_draws_as_the_model(tab, page, model)


class ConvolutionalModel(nn.Module):
    """A fork's model: a convolutional encoder, and a decoder of Linear, Unflatten, both convolutions, and four
    activations."""

    latent_dim, name = 8, "convolutional autoencoder"

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(4 * 14 * 14, 8))
        self.decoder = nn.Sequential(
            nn.Linear(8, 8 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (8, 7, 7)),
            nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (4, 14, 14)
            nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
            nn.ConvTranspose2d(4, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid(),  # (1, 28, 28)
        )

    def encode(self, images):
        return self.encoder(images)

    def decode(self, codes):
        return self.decoder(codes)

    def prior(self, dimensions):
        return torch.zeros(dimensions), torch.eye(dimensions), "N(0, I)"


def tiny_page_of(model, tiny_run, tmp_path):
    """The page of `model` on the tiny stand-in, as explorer.py makes it, without a run of its own."""
    checkpoint = {"config": {"seed": 0, "val_size": 60, "noise_std": 0.2}, "best_epoch": 1, "stamp": "s"}
    run = run_data(model, checkpoint, tiny_run / "data")
    path = tmp_path / "explorer.html"
    path.write_bytes(explorer.page_bytes(explorer.page_data(model, checkpoint, tmp_path, run), tmp_path))
    return path


def test_the_page_draws_what_a_convolutional_decoder_draws(tab, tiny_run, tmp_path):
    torch.manual_seed(0)
    model = ConvolutionalModel().eval()
    assert_draws_as_the_model(tab, tiny_page_of(model, tiny_run, tmp_path), model)


class WithBatchNorm(ConvolutionalModel):
    def __init__(self):
        super().__init__()
        self.decoder[1] = nn.BatchNorm1d(392)


class WithSkip(ConvolutionalModel):
    def decode(self, codes):  # a decoder whose forward does more than run its layers
        return (self.decoder(codes) + 0.1).clamp(0, 1)


def test_a_decoder_the_page_cannot_run_gets_no_page_and_one_line_that_says_which_part(tiny_run, tmp_path):
    with pytest.raises(explorer.PageError) as error:
        tiny_page_of(WithBatchNorm().eval(), tiny_run, tmp_path)
    assert str(error.value) == (
        "decoder.1 is a BatchNorm1d, which the page cannot run (it knows Linear, Conv2d, ConvTranspose2d, "
        "Unflatten, Flatten, ReLU, LeakyReLU, Sigmoid, Tanh, Identity, Dropout): no explorer page; every figure and "
        "the report are made as usual")
    with pytest.raises(explorer.PageError, match=r"^model.decode does more than run its decoder's layers in order"):
        tiny_page_of(WithSkip().eval(), tiny_run, tmp_path)


# ---- Denoising whole: the test image, its noise, the code, the output ----

def page_array(tab, expression: str) -> torch.Tensor:
    return torch.tensor(tab.evaluate(f"Array.from({expression})"), dtype=torch.float32)


@torch.no_grad()
def test_the_page_shows_the_datasets_test_image_with_evaluates_noise_and_encodes_it_as_the_model_does(
        tab, page, tiny_run):
    model, checkpoint = load_checkpoint(page.parent / CHECKPOINT_FILE)
    clean, _ = load_fashion_mnist(tiny_run / "data", train=False)
    unit_noise = standard_test_noise(clean.shape)  # evaluate.py's test noise, at std 1
    open_page(tab, page, "#image=37&noise=0.45")  # test image 37 of the dataset's numbering
    place = tab.evaluate("origin.picture")
    assert tab.evaluate(f"RUN.pictures.indices[{place}]") == 37
    assert page_array(tab, "readBack('clean')").tolist() == (clean[37, 0] * 255).round().flatten().tolist()
    for std in (0.0, 0.2, 0.45, 1.0):
        noisy = page_array(tab, f"noisy({place}, {std})").view(1, 1, 28, 28)
        assert (noisy - (clean[37] + std * unit_noise[37])).abs().max() <= std / 64 + 1e-6  # to 1/32 of a std
        code = page_array(tab, f"imageCode({place}, {std})")
        assert torch.allclose(code, model.encode(noisy)[0], atol=1e-4), std
    noisy = page_array(tab, f"noisy({place}, 0.45)").view(1, 1, 28, 28)
    output = model.decode(model.encode(noisy))
    expected = f"MAE {(output - clean[37]).abs().mean().item():.3f} from the clean image"
    assert tab.inner_text("#output-caption").startswith(expected)
    assert f"MAE {(noisy - clean[37]).abs().mean().item():.3f}" in tab.inner_text("#noisy-caption")
    assert tab.errors == []


def test_the_noise_slider_moves_the_code_and_editing_the_code_shows_the_decoder_alone(tab, page):
    open_page(tab, page, "#image=5")
    before = shown(tab)["code"]
    tab.fill("#noise", "0.8")  # an input event, as a drag sends
    assert shown(tab)["view"] == "Showing: test image 5 (Sandal) at noise std 0.80."
    after = shown(tab)["code"]
    assert after != before and after == tab.evaluate("Array.from(imageCode(origin.picture, 0.8))")  # it followed
    low, high = tab.evaluate("RUN.ranges[0]")
    tab.fill("#z0", str((low + high) / 2))  # a code a slider can reach, wherever the image's lies
    assert shown(tab)["view"].startswith("Showing: edited from test image 5 (Sandal)")
    assert "from a code edited by hand: what the decoder alone makes of it" in tab.inner_text("#output-caption")


@torch.no_grad()
def test_each_slider_marks_where_it_started_and_its_strip_is_that_number_alone_moved(tab, page):
    model, _ = load_checkpoint(page.parent / CHECKPOINT_FILE)
    open_page(tab, page, "#image=2")
    start = tab.evaluate("Array.from(startCode)")
    mark = tab.evaluate("document.getElementById('start3').style.left")
    tab.focus("#z3")
    for _ in range(10):
        tab.keyboard.press("ArrowLeft")
    assert tab.evaluate("document.getElementById('start3').style.left") == mark  # the mark stays at the start
    tab.wait_for_function("stripTimer === null")
    code = torch.tensor(shown(tab)["code"])
    low, high = tab.evaluate("RUN.ranges[3]")
    for k, at in enumerate(torch.linspace(0, 1, 5).tolist()):
        moved = code.clone()
        moved[3] = low + at * (high - low)
        expected = (model.decode(moved[None]) * 255).flatten()
        assert (page_array(tab, f"readBack('strip3-{k}')") - expected).abs().max() <= 1, k
    tab.click("#reset")
    assert shown(tab)["code"] == start and shown(tab)["view"].startswith("Showing: test image 2 (Pullover)")


def plane_point(tab, x: float, y: float) -> tuple:
    """The window's point at (x, y) of the plane canvas's own pixels."""
    box = tab.locator("#plane").bounding_box()
    scale = box["width"] / tab.evaluate("document.getElementById('plane').width")
    return box["x"] + x * scale, box["y"] + y * scale


def test_hovering_a_dot_shows_its_image_a_click_picks_it_and_a_drag_moves_the_cross_as_it_goes(tab, page):
    open_page(tab, page, "#image=0")
    dot = tab.evaluate("dots.at[47]")
    tab.mouse.move(*plane_point(tab, *dot))
    assert tab.is_visible("#hover") and tab.inner_text("#hover-words") == "test image 47 (Sneaker)"
    assert tab.evaluate("readBack('hover-image')") == tab.evaluate("Array.from(clean(47), v => Math.round(255 * v))")
    tab.mouse.down()
    tab.mouse.up()
    assert shown(tab)["view"] == "Showing: test image 47 (Sneaker) at noise std 0.20."
    tab.mouse.move(*plane_point(tab, 5, 5))
    tab.mouse.down()
    seen = []
    for step in range(1, 4):
        tab.mouse.move(*plane_point(tab, 5 + 40 * step, 5 + 30 * step))
        seen.append(shown(tab)["code"][:2])  # before the button is let go
    tab.mouse.up()
    assert len({tuple(code) for code in seen}) == 3
    assert shown(tab)["view"].startswith("Showing: edited from test image 47")


# ---- The address ----

ADDRESSES = {  # fragment -> (the notice's words, or None; what the page says it shows)
    # The tiny run's 100 test images are all on its page; test image k is of class k % 10.
    "": (None, "test image 0 (T-shirt/top)"),
    "#image=25": (None, "test image 25 (Sandal)"),
    "#z=abc": ('number 1 of the code, "abc", is not a finite decimal number: showing test image 0 (T-shirt/top) '
               'instead', "test image 0 (T-shirt/top)"),
    "#z=1e400,0,0,0,0,0,0,0": ('number 1 of the code, "1e400", is not a finite decimal number', "test image 0"),
    "#z=1,2,3": ("the code has 3 numbers; this model has 8: showing test image 0 (T-shirt/top) instead",
                 "test image 0"),
    "#z=1,2,3,4,5,6,7,8,9&image=12": ("the code has 9 numbers; this model has 8: showing test image 12 "
                                      "(Pullover) instead", "test image 12 (Pullover)"),
    "#z=": ("the code is empty", "test image 0"),
    "#z=NaN,0,0,0,0,0,0,0": ('"NaN", is not a finite decimal number', "test image 0"),
    "#z=0x1,0,0,0,0,0,0,0": ('"0x1", is not a finite decimal number', "test image 0"),
    "#z=1%2C2%2C3%2C4%2C5%2C6%2C7%2C8": (None, "a code from the link"),
    "#z=%E2%88%921,0,0,0,0,0,0,0": ("z has a typographic minus (\u2212), read as -", "a code from the link"),
    "#image=-5": ('the image "-5" is not a whole number: test image 0 (T-shirt/top) instead', "test image 0"),
    "#image=1.5": ('the image "1.5" is not a whole number', "test image 0"),
    "#image=0x10": ('the image "0x10" is not a whole number', "test image 0"),
    "#image=1e2": ('the image "1e2" is not a whole number', "test image 0"),
    "#image=100": ("the image \"100\" is not one of this page's 100 test images", "test image 0"),
    "#image=3&image=5": ('image is given twice: the last, "5", was used', "test image 5 (Sandal)"),
    "#y=-1": ('the axis y "-1" is not a whole number from 0 to 7: z1 up instead', "test image 0"),
    "#x=3&y=3": ("the axes x and y are both z3: z4 up instead", "test image 0"),
    "#image=34&colour=red": ('"colour" is not part of a view, and was ignored', "test image 34 (Coat)"),
    "#t=0.5": ("t is given, but not both A and B: no walk", "test image 0"),
    "#a=1,1,1,1,1,1,1,1&b=1,1,1,1,1,1,1,1": ("A and B are the same code: a walk between them stays on one garment",
                                             "test image 0"),
    "#noise=abc": ('the noise "abc" is not a number from 0 to 1: the run\'s 0.2 instead', "test image 0"),
    "#image=7&noise=0.35": (None, "test image 7 (Sneaker) at noise std 0.35"),
    "#run=0123abcd&image=7": ('this link was made on another run ("0123abcd"); this page is run run', "test image 7"),
}


def test_every_address_is_checked_and_a_bad_one_says_what_was_used_instead(tab, page):
    for number, (fragment, (notice, view)) in enumerate(ADDRESSES.items()):
        if number % 4 == 0:
            open_page(tab, page, fragment)  # a link opened afresh
        else:
            change_address(tab, fragment, view)
        seen = shown(tab)
        assert (seen["notice"] is None) == (notice is None) and (notice is None or notice in seen["notice"]), seen
        assert seen["view"].startswith(f"Showing: {view}"), (fragment, seen)
        assert len(seen["code"]) == 8 and tab.errors == []
    change_address(tab, "#z=1%2C2%2C3%2C4%2C5%2C6%2C7%2C8", "a code from the link")  # commas as mail writes them
    assert shown(tab)["code"] == [1, 2, 3, 4, 5, 6, 7, 8]
    change_address(tab, "#z=%E2%88%921,0,0,0,0,0,0,0", "a code from the link")
    assert shown(tab)["code"][0] == -1


def test_whatever_the_page_writes_into_its_address_it_reads_back_to_the_same_view(clock_tab, page):
    tab = clock_tab
    for fragment in ("#image=61&noise=0.7", "#z=1e39,0,0,0,0,-3.25,0,0", "#image=8&z=1e30,2,3,4,5,6,7,8&x=5&y=2"):
        open_page(tab, page, fragment)
        tab.clock.run_for(300)
        before = shown(tab), tab.evaluate("readBack('decoded')"), tab.evaluate("location.hash")
        assert before[0]["notice"] is None and all(map(math.isfinite, before[0]["code"])), before[0]
        open_page(tab, page, before[2])
        tab.clock.run_for(300)
        after = shown(tab), tab.evaluate("readBack('decoded')"), tab.evaluate("location.hash")
        assert after == before, fragment


def test_a_link_from_another_run_says_so_in_one_line_and_still_shows_the_view(tab, page, tiny_run, tmp_path):
    torch.manual_seed(1)
    other = tiny_page_of(DenoisingAutoencoder(8).eval(), tiny_run, tmp_path)  # stamp "s"
    open_page(tab, page, "#image=12")
    link = tab.evaluate("viewHash()")
    open_page(tab, other, link)
    seen = shown(tab)
    assert seen["notice"] == (f'In this link, this link was made on another run ("{link[5:17]}"); this page is run '
                              f"{tmp_path.name} (s), whose model draws the view.")
    assert seen["view"].startswith("Showing: edited from test image 12 (Pullover)")  # the other model's code differs


def test_a_code_far_outside_the_training_codes_is_flagged_not_hidden(tab, page):
    open_page(tab, page, "#z=1e30,0,0,0,0,0,0,0")
    assert tab.evaluate("code[0]") == pytest.approx(1e30, rel=1e-6)
    assert tab.inner_text("#outside").startswith("Outside the training codes' range: z0 = 1.00e+30 (")


def test_editing_the_address_in_an_open_tab_changes_the_view(tab, page):
    open_page(tab, page, "#image=2")
    tab.evaluate("location.hash = '#image=55'")
    tab.wait_for_function("document.getElementById('view').textContent.includes('test image 55 (Sandal)')")
    assert shown(tab)["notice"] is None


def test_a_and_b_and_the_walk_travel_in_the_link_and_one_walk_runs_at_a_time(clock_tab, page):
    tab = clock_tab
    open_page(tab, page, "#image=1")
    assert tab.is_disabled("#walk") and "Set both" in tab.inner_text("#walk-note")  # says why it cannot act
    tab.click("#set-a")
    tab.clock.run_for(300)  # the address is written a few times a second at most
    open_page(tab, page, tab.evaluate("location.hash"))  # a link with A in it keeps A
    assert tab.inner_text("#walk-note").startswith("A is a code from the link; B is not set")
    tab.click("#set-b")
    assert tab.is_disabled("#walk") and "A and B are the same code" in tab.inner_text("#walk-note")
    tab.select_option("#class", "8")
    tab.click("#set-b")
    assert not tab.is_disabled("#walk")
    tab.evaluate("window.ts = []; new MutationObserver(() => ts.push(walkT)).observe(document.getElementById('view'), "
                 "{childList: true, characterData: true, subtree: true})")
    tab.click("#walk")
    tab.clock.run_for(300)
    tab.click("#walk")  # again, mid-walk: it starts over, alone
    tab.clock.run_for(3000)
    ts = tab.evaluate("ts")
    restart = ts.index(0.0, 1)
    assert ts[restart:] == sorted(ts[restart:]) and ts[-1] == 1  # after the restart t only grows: one walk
    assert shown(tab)["view"].startswith("Showing: walk A \u2192 B, t = 1.00")
    link = tab.input_value("#link")
    assert re.fullmatch(r"#run=\w+&z=[^&]+&x=0&y=1&a=[^&]+&b=[^&]+&t=1\.00", link), link  # a file: the part after #
    open_page(tab, page, link)
    assert shown(tab)["view"].startswith("Showing: walk A \u2192 B, t = 1.00")


def test_the_page_says_what_is_on_screen_after_each_kind_of_edit(tab, page):
    open_page(tab, page, "#image=85")
    assert tab.inner_text("#clean-caption") == "test image 85 (Sandal), clean"
    assert tab.get_attribute("#decoded", "aria-label").startswith(
        "the output: the garment the decoder draws from test image 85 (Sandal) at noise std 0.20, MAE 0.")
    tab.focus("#plane")
    tab.keyboard.press("ArrowUp")
    assert shown(tab)["view"].startswith("Showing: edited from test image 85 (Sandal)")
    tab.keyboard.press("Enter")  # the test image nearest the cross
    assert re.match(r"Showing: test image \d+ \(", shown(tab)["view"])
    tab.click("#sample")
    assert shown(tab)["view"] == f"Showing: a sample from {tab.evaluate('RUN.sampling.source')}."
    assert tab.inner_text("#clean-caption") == "no test image behind this code" and tab.is_disabled("#noise")
    assert tab.input_value("#class") == ""  # the class menu no longer names the old image's class
    assert "a sample from" in tab.get_attribute("#decoded", "aria-label")


# ---- Screens, keyboards and screen readers ----

def test_on_a_laptop_the_whole_pipeline_and_the_plane_fit_one_screen(tab, page):
    open_page(tab, page)
    for width, height in ((1366, 650), (1280, 720)):
        tab.set_viewport_size({"width": width, "height": height})
        boxes = {name: tab.locator(f"#{name}").bounding_box() for name in ("clean", "noisy", "z0", "decoded", "plane")}
        assert all(box["y"] >= 0 and box["y"] + box["height"] <= height for box in boxes.values()), (width, boxes)
        assert tab.evaluate("document.documentElement.scrollWidth") <= width


def test_a_phone_sized_window_needs_no_sideways_scroll_whatever_the_address(tab, page):
    open_page(tab, page, "#" + "k" * 3000 + "=1&image=4")  # a long unknown key is echoed in 40 characters
    assert f'"{"k" * 39}\u2026" is not part of a view' in shown(tab)["notice"]
    for width in (400, 360, 320):
        tab.set_viewport_size({"width": width, "height": 800})
        assert tab.evaluate("document.documentElement.scrollWidth") <= width
        assert tab.evaluate("document.getElementById('plane').getBoundingClientRect().right") <= width
        captions = [tab.locator(f"#{name}-caption").bounding_box() for name in ("clean", "noisy")]
        assert captions[0]["y"] == captions[1]["y"]  # the two images' captions start level


def test_axe_core_finds_nothing_in_any_state(tab, page):
    sync_axe = pytest.importorskip("axe_playwright_python.sync_playwright",
                                   reason="no axe-playwright-python here: pip install axe-playwright-python")
    tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
    for fragment, then in (("#image=3&colour=red", None), ("#z=1,2,3,4,5,6,7,8", "#sample")):
        open_page(tab, page, fragment)
        if then:
            tab.click(then)
        results = sync_axe.Axe().run(tab, options={"runOnly": {"type": "tag", "values": tags}})
        violations = results.response["violations"]
        assert [(rule["id"], rule["nodes"][0]["target"]) for rule in violations] == [], fragment
    assert tab.locator("[role=status], [aria-live], [role=alert]").count() == 1  # one live region, not eleven


def test_the_sliders_and_the_plane_work_from_the_keyboard_and_read_as_shown(tab, page):
    open_page(tab, page, "#image=1")
    low, high = tab.evaluate("RUN.ranges[0]")
    before = tab.evaluate("code[0]")
    tab.focus("#z0")
    tab.keyboard.press("ArrowRight")
    assert tab.evaluate("code[0]") == pytest.approx(before + (high - low) / 100, abs=(high - low) / 100)
    assert tab.get_attribute("#z0", "aria-valuetext") == tab.inner_text("#v0")  # read out as shown, "9.60"
    y_low, y_high = tab.evaluate("RUN.ranges[1]")
    before = tab.evaluate("code[1]")
    tab.focus("#plane")
    tab.keyboard.press("ArrowUp")
    assert tab.evaluate("code[1]") == pytest.approx(before + 0.02 * (y_high - y_low), rel=1e-5)
    assert "z1 = " in tab.get_attribute("#plane", "aria-label")
    for control in ("#decoded", "#clean", "#noisy"):
        assert tab.get_attribute(control, "aria-label")
    for control in ("t", "link", "class", "x", "y", "noise"):
        assert tab.locator(f"label[for={control}]").count() == 1
    tab.select_option("#x", "1")  # the axis up's number: the plane would fold into a line
    assert (tab.input_value("#x"), tab.input_value("#y")) == ("1", "0")


def test_the_address_is_written_a_few_times_a_second_not_at_every_move(clock_tab, page):
    tab = clock_tab
    open_page(tab, page)
    tab.evaluate("window.writes = 0; const real = history.replaceState.bind(history);"
                 "history.replaceState = (...a) => { writes += 1; return real(...a); }; 0")
    tab.evaluate("const slider = document.getElementById('z0');"  # 30 moves, as fast as a drag sends them
                 "for (let i = 0; i < 30; i++) { slider.stepUp(); slider.dispatchEvent(new Event('input')); }")
    tab.clock.run_for(1000)
    assert tab.evaluate("writes") == 1  # once, a quarter of a second after the moves began
    assert f"&z={tab.evaluate('String(code[0])')}," in tab.evaluate("location.hash")


def test_measure_reports_input_to_painted_frame(browser, page):
    timing = explorer.measure_in_chromium(page, moves=5, browser=browser)
    assert timing["moves"] == 5 and 0 < timing["median"] <= timing["worst"]


# ---- One file, any model the page can run, any code size, a notebook's frame ----

def test_the_page_is_one_file_that_needs_no_network(page):
    text = page.read_text()
    assert "http" not in text and "<script src" not in text and "@import" not in text
    data = json.loads(re.search(r"const RUN = (.*);\n", text).group(1))
    assert data["model"] == DenoisingAutoencoder.name and data["latent_dim"] == 8


@torch.no_grad()
def test_a_convolutional_encoder_runs_in_the_page_and_a_vaes_gives_its_mean(tab, tiny_run, tmp_path):
    torch.manual_seed(0)
    model = ConvolutionalModel().eval()
    open_page(tab, tiny_page_of(model, tiny_run, tmp_path), "#image=4&noise=0.3")
    noisy = page_array(tab, "noisy(origin.picture, 0.3)").view(1, 1, 28, 28)
    assert torch.allclose(torch.tensor(shown(tab)["code"]), model.encode(noisy)[0], atol=1e-4)
    vae = MeanOfTwo().eval()
    open_page(tab, tiny_page_of(vae, tiny_run, tmp_path), "#image=4&noise=0.3")
    assert torch.allclose(torch.tensor(shown(tab)["code"]), vae.encode(noisy)[0], atol=1e-4)
    assert tab.errors == [] and tab.inner_text("#encoder-note") == ""


class MeanOfTwo(ConvolutionalModel):
    """A VAE's shape: the encoder gives 2 x d numbers (mean, log variance); the code is the first d."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 16))

    def encode(self, images):
        return self.encoder(images)[:, :8]


class EncodesMore(ConvolutionalModel):
    def encode(self, images):
        return super().encode(images) * 2  # more than its encoder's layers


def test_an_encoder_the_page_cannot_run_still_gets_a_page_that_says_why_in_one_line(tab, tiny_run, tmp_path):
    torch.manual_seed(0)
    open_page(tab, tiny_page_of(EncodesMore().eval(), tiny_run, tmp_path), "#image=6&noise=0.5")
    assert tab.inner_text("#encoder-note") == (
        "This page cannot run the model's encoder (model.encode does more than run its encoder's layers in order (a "
        "skip, a reshape or a second head outside them)): the noise stays at the run's std 0.2, and each image's "
        "code is the one explorer.py computed.")
    assert tab.is_disabled("#noise") and "the noise stays at the run's 0.2" in shown(tab)["notice"]
    assert shown(tab)["view"] == "Showing: test image 6 (Shirt) at noise std 0.20."


@pytest.mark.parametrize("latent_dim", [1, 20])
def test_the_page_works_for_any_code_size_and_says_what_it_does_past_16(tab, latent_dim, tiny_run, tmp_path):
    torch.manual_seed(0)
    try:
        path = tiny_page_of(DenoisingAutoencoder(latent_dim).eval(), tiny_run, tmp_path)
    except explorer.PageError as error:  # a fork's model (test_the_published_model_gets_a_page_... pins ours)
        pytest.skip(f"no page for this model: {error}")
    open_page(tab, path, "#image=3")
    assert tab.locator("#sliders input[type=range]").count() == min(latent_dim, 16)  # one per number
    assert (f"This code has {latent_dim} numbers: the sliders move the first 16"
            in tab.inner_text("#slider-note")) == (latent_dim > 16)
    assert tab.errors == []


def test_a_notebook_frame_shows_the_page_whole(tab, page):
    frame_html = explorer.in_a_frame(page)
    srcdoc = re.fullmatch(r'<iframe srcdoc="(.*)" style="[^"]*"></iframe>', frame_html, re.DOTALL).group(1)
    assert html.unescape(srcdoc) == page.read_text()
    tab.set_content(frame_html)
    frame = tab.frames[1]
    frame.wait_for_function("document.documentElement.dataset.state === 'ready'")
    assert frame.evaluate("document.getElementById('link').value").startswith("#run=")  # no address of its own


@requires_real_data
def test_the_published_models_page_stays_under_its_size_limit_from_2_to_784_numbers(tmp_path):
    """The size depends on the numbers' count, not on their values: real labels, random codes, one load."""
    clean, labels = load_fashion_mnist(REAL_DATA_DIR, train=False)
    checkpoint = {"config": {"noise_std": 0.2}, "best_epoch": 1, "stamp": "s"}
    for latent_dim in (2, 8, 16, 784):
        codes = torch.randn(len(clean), latent_dim)
        run = RunData(clean, clean, labels, clean[:1], labels[:1], clean[:1], clean[:1], clean[:1],
                      train_codes=codes, test_codes=codes)
        data = explorer.page_data(DenoisingAutoencoder(latent_dim), checkpoint, tmp_path, run)
        size = len(explorer.page_html(data).encode())
        assert size <= explorer.MAX_BYTES, (latent_dim, size)
