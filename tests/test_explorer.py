"""The explorer page: its decoder draws what the model's does, for the published MLP and for a
convolutional decoder; every address is checked; it says what it shows; it works at 360-400 px and
from the keyboard. In real headless Chromium (Debian's `chromium`, driven by playwright, a
development tool): one browser for the whole module, a fresh tab per test.
"""

import html
import json
import re
import shutil

import pytest
import torch
from torch import nn

import explorer
from checkpoints import load_checkpoint
from conftest import REAL_DATA_DIR, requires_real_data
from dae import DenoisingAutoencoder
from data import load_fashion_mnist
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
    explorer.main(["--run-dir", str(run_dir), "--data-dir", str(trained_tiny_run / "data")])
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


def test_the_page_draws_what_the_runs_decoder_draws(tab, page):
    model, _ = load_checkpoint(page.parent / CHECKPOINT_FILE)
    assert_draws_as_the_model(tab, page, model)


class ConvolutionalModel(nn.Module):
    """A fork's model: any encoder, and a decoder of Linear, Unflatten, both convolutions, and four activations."""

    latent_dim, name = 8, "convolutional autoencoder"

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 8))
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
        "decoder.1 is a BatchNorm1d, which the page's decoder cannot run (it knows Linear, Conv2d, ConvTranspose2d, "
        "Unflatten, Flatten, ReLU, LeakyReLU, Sigmoid, Tanh, Identity, Dropout): no explorer page; every figure and "
        "the report are made as usual")
    with pytest.raises(explorer.PageError, match=r"^model.decode does more than run its decoder's layers in order"):
        tiny_page_of(WithSkip().eval(), tiny_run, tmp_path)


# ---- The address ----

ADDRESSES = {  # fragment -> (the notice's words, or None; what the page says it shows)
    # The tiny run's page holds 10 test images of each class, class by class: 11-20 are trousers.
    "": (None, "test image 1 (T-shirt/top)"),
    "#image=25": (None, "test image 25 (Pullover)"),
    "#z=abc": ('number 1 of the code, "abc", is not a finite number: showing test image 1 (T-shirt/top) instead',
               "test image 1 (T-shirt/top)"),
    "#z=1e400,0,0,0,0,0,0,0": ('number 1 of the code, "1e400", is not a finite number', "test image 1"),
    "#z=1,2,3": ("the code has 3 numbers; this model has 8: showing test image 1 (T-shirt/top) instead",
                 "test image 1"),
    "#z=1,2,3,4,5,6,7,8,9&image=12": ("the code has 9 numbers; this model has 8: showing test image 12 "
                                      "(Trouser) instead", "test image 12 (Trouser)"),
    "#z=": ("the code is empty", "test image 1"),
    "#z=NaN,0,0,0,0,0,0,0": ('"NaN", is not a finite number', "test image 1"),
    "#z=1%2C2%2C3%2C4%2C5%2C6%2C7%2C8": (None, "a code from the link"),
    "#image=-5": ('the image "-5" is not a whole number from 1 to 100: test image 1 (T-shirt/top) instead',
                  "test image 1"),
    "#image=1.5": ('the image "1.5" is not a whole number from 1 to 100', "test image 1"),
    "#y=-1": ('the axis y "-1" is not a whole number from 0 to 7: z1 up instead', "test image 1"),
    "#image=34&colour=red": ('"colour" is not part of a view, and was ignored', "test image 34 (Dress)"),
    "#t=0.5": ("t is given, but not both A and B: no walk", "test image 1"),
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
    tab.select_option("#class", "8")
    tab.click("#set-b")
    assert not tab.is_disabled("#walk")
    tab.evaluate("window.ts = []; document.getElementById('t').addEventListener('input', () => {});"
                 "new MutationObserver(() => ts.push(walkT)).observe(document.getElementById('view'), "
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
    assert re.search(r"#z=[^&]+&x=0&y=1&a=[^&]+&b=[^&]+&t=1\.00$", link), link
    open_page(tab, page, "#" + link.split("#")[1])
    assert shown(tab)["view"].startswith("Showing: walk A \u2192 B, t = 1.00")


def test_the_page_says_what_is_on_screen_after_each_kind_of_edit(tab, page):
    open_page(tab, page, "#image=85")
    assert "its code is on the sliders" in tab.inner_text("#picked")
    tab.click("#plane", position={"x": 50, "y": 60})
    assert shown(tab)["view"].startswith("Showing: edited from test image 85 (Bag)")
    assert "where the code started: it has been edited since" in tab.inner_text("#picked")
    tab.click("#sample")
    assert shown(tab)["view"] == f"Showing: a sample from {tab.evaluate('RUN.sampling.source')}."
    assert tab.inner_text("#picked").startswith("no test image behind this code")
    assert tab.input_value("#class") == ""  # the class menu no longer names the old image's class


# ---- Small screens, keyboards and screen readers ----

def test_a_phone_sized_window_needs_no_sideways_scroll(tab, page):
    open_page(tab, page)
    for width in (400, 360):
        tab.set_viewport_size({"width": width, "height": 800})
        assert tab.evaluate("document.documentElement.scrollWidth") <= width
        assert tab.evaluate("document.getElementById('plane').getBoundingClientRect().right") <= width


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
    for control in ("#decoded", "#clean"):
        assert tab.get_attribute(control, "aria-label")
    for control in ("t", "link", "class", "x", "y"):
        assert tab.locator(f"label[for={control}]").count() == 1


def test_the_address_is_written_a_few_times_a_second_not_at_every_move(clock_tab, page):
    tab = clock_tab
    open_page(tab, page)
    tab.evaluate("window.writes = 0; const real = history.replaceState.bind(history);"
                 "history.replaceState = (...a) => { writes += 1; return real(...a); }; 0")
    tab.evaluate("const slider = document.getElementById('z0');"  # 30 moves, as fast as a drag sends them
                 "for (let i = 0; i < 30; i++) { slider.stepUp(); slider.dispatchEvent(new Event('input')); }")
    tab.clock.run_for(1000)
    assert tab.evaluate("writes") == 1  # once, a quarter of a second after the moves began
    assert tab.evaluate("location.hash").startswith(f"#z={tab.evaluate('Number(code[0].toPrecision(6))')},")


def test_measure_reports_input_to_painted_frame(browser, page):
    timing = explorer.measure_in_chromium(page, moves=5, browser=browser)
    assert timing["moves"] == 5 and 0 < timing["median"] <= timing["worst"]


# ---- One file, any code size, a notebook's frame ----

def test_the_page_is_one_file_that_needs_no_network(page):
    text = page.read_text()
    assert "http" not in text and "<script src" not in text and "@import" not in text
    data = json.loads(re.search(r"const RUN = (.*);\n", text).group(1))
    assert data["model"] == DenoisingAutoencoder.name and data["latent_dim"] == 8


@pytest.mark.parametrize("latent_dim", [1, 20])
def test_the_page_works_for_any_code_size_and_says_what_it_does_past_16(tab, latent_dim, tiny_run, tmp_path):
    torch.manual_seed(0)
    open_page(tab, tiny_page_of(DenoisingAutoencoder(latent_dim), tiny_run, tmp_path), "#image=3")
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
    assert frame.evaluate("document.getElementById('link').value").startswith("#z=")  # no address of its own


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
