"""Fine-tune: adapt the pretrained model to this city on a small share of its data."""

import streamlit as st

import charts
import page_parts
from state import finetuning, inputs, models, predictions, saved
from state.session import FinetuneSettings, session
from state.text import error, plain
from trajmoe.errors import TrajMoEError
from trajmoe.trajectories.report import plural

st.title("Fine-tune the model on this city")
st.markdown(
    "The pretrained model already knows how people move in other cities. Fine-tuning shows it a "
    "small share of this city's trajectories so that it learns the local patterns, in seconds."
)
prep, data = page_parts.require_city()
city = plain(prep.meta["city"])  # shown in Markdown; the file names below use the name itself
sess = session()

choices = ["The shipped pretrained model", "A checkpoint I upload"]
start = st.radio("Start from", choices, index=int(sess.base_checkpoint is not None), horizontal=True, key="ckpt_choice")
if start == choices[1]:
    files = st.file_uploader(
        f"The checkpoint's two files, NAME.safetensors and NAME.json (up to {inputs.max_upload_mb()} MB each)",
        type=["safetensors", "json"], accept_multiple_files=True, key="ckpt_upload")
    if files:
        try:
            models.start_from_upload(files)
            st.success(f"Starting from the uploaded checkpoint ({plain(files[0].name)}).")
        except TrajMoEError as exc:
            st.error(f"This checkpoint cannot be used: {error(exc)}")
            st.stop()
else:
    sess.start_from(None)

try:
    base = models.base_model()
except TrajMoEError as exc:
    st.error(f"The starting checkpoint cannot be loaded: {error(exc)}")
    st.stop()
if base is None:
    st.warning("The shipped checkpoint `assets/trajmoe_pretrained.safetensors` (and its .json) is not in "
               "this copy of the app. Upload a checkpoint above to fine-tune.")
    st.stop()
_, base_meta, base_path = base
trained_on = ", ".join(dict.fromkeys(base_meta.get("cities", []))) or "other cities"  # once each
st.caption(f"Starting checkpoint: {plain(base_path.name)}, pretrained on {plain(trained_on)}.")

seen = predictions.pretrained_on(base_meta, prep)
if seen:
    st.info(f"This checkpoint's pretraining included **{plain(seen)}** (its training part). The pretrained model's "
            "result below is therefore not a zero-shot test on a new city: it has seen this city before.")

chosen = sess.finetune_settings
c1, c2 = st.columns(2)
share = c1.slider("Share of the city's data to learn from (%)", 1, 100, chosen.share, key="ft_share",
                  help="The paper's setting is 5%: one pass over 5% of the training trajectories.")
epochs = c2.number_input("Passes over it (epochs)", min_value=1, max_value=10, value=chosen.epochs, key="ft_epochs")
with st.expander("Advanced"):
    max_steps = st.number_input("Stop after this many training steps (0 = no limit)", 0, 100_000, chosen.max_steps,
                                key="ft_max_steps")
    light = st.toggle("Train only the city's own expert, the routers and the output (faster, lighter)",
                      value=chosen.light, key="ft_light")
sess.finetune_settings = FinetuneSettings(share=int(share), epochs=int(epochs), max_steps=int(max_steps),
                                          light=bool(light))  # kept across pages, refreshes, the project file

held_out = prep.meta["n_visits"]
too_small = min(held_out["val"], held_out["test"]) < finetuning.MIN_HELD_OUT
if too_small:
    st.info(f"Too little data to fine-tune and score a model: {city} has {held_out['val']:,} visits to check "
            f"the training on and {held_out['test']:,} to score it on (at least {finetuning.MIN_HELD_OUT} of each "
            "are needed). Upload a file with more people, or more visits per person.")


def run_finetune(fraction: float, epochs: int, max_steps: int | None, mode: str) -> None:
    """The button's callback: it runs before the script, so the sidebar (drawn before this page)
    already names the fine-tuned model in the same run."""
    try:
        with saved.fine_tuning(sess):  # recorded while it runs: a restart that cuts it off is said on reconnect
            sess.finetuned = finetuning.finetune(prep, data, fraction=fraction, epochs=epochs, max_steps=max_steps,
                                                 mode=mode)
    except TrajMoEError as exc:
        sess.finetune_error = f"Fine-tuning could not run: {error(exc)}"


st.button(f"Fine-tune on {share}% of {city}", type="primary", key="ft_run", disabled=too_small, on_click=run_finetune,
          args=(share / 100, int(epochs), int(max_steps) or None, "light" if light else "full"))
if sess.finetune_error:
    st.error(sess.finetune_error)
    sess.finetune_error = None
    st.stop()

ft = page_parts.finetuned_for(prep.folder)
if ft is None:
    st.info("Not fine-tuned yet: the Flows, Experts and Scenario pages show the pretrained model's "
            + ("predictions" if seen else "zero-shot predictions") + " until you do.")
    st.stop()

st.success(f"Done: {plural(ft.steps, 'training step')} in {ft.seconds:.1f} s. The Flows, Experts and "
           f"Scenario pages now show **{plain(ft.label)}**.")
if ft.verdict:  # which state was kept, on the validation visits, and how sure that is
    st.info(f"**Which model was kept.** {plain(ft.verdict)}")
table = finetuning.metrics_table(ft.metrics, seen=seen)
st.markdown(f"#### How often each model guesses the next place right, on {ft.metrics['fine-tuned']['n']:,} "
            "held-out visits")
measures = list(table.columns[1:])
st.dataframe(table.style.format("{:.1%}", subset=measures),  # one format: every measure a percentage, 1 decimal
             hide_index=True, column_config={c: st.column_config.Column(help=finetuning.MEASURES[c]) for c in measures})
charts.plotly(charts.metrics_chart(table), key="ft_metrics")
st.caption(
    f"**{finetuning.RANK_SCORE}**: {finetuning.MEASURES[finetuning.RANK_SCORE]}. **Markov baseline**: guesses the places "
    "people most often went to next from the same place in the training data. **Return + gravity baseline**: "
    "guesses a return to the person's own earlier places, or else a busy place nearby. The baselines learn "
    "from the same share of data. Held-out visits are the last 20% of each person's visits, never seen in "
    f"fine-tuning; each is predicted from the person's earlier visits (up to the last {predictions.CONTEXT_VISITS}; "
    "fewer for people with only a few visits), as in the benchmarks.")

d1, d2, d3 = st.columns(3)
stem = f"trajmoe_{prep.meta['city'].lower().replace(' ', '_')}"
d1.download_button("Download the fine-tuned weights (.safetensors)", ft.files["safetensors"],
                   file_name=f"{stem}.safetensors", mime="application/octet-stream", key="dl_weights")
d2.download_button("Download its description (.json)", ft.files["json"], file_name=f"{stem}.json",
                   mime="application/json", key="dl_sidecar")
if d3.button("Show the pretrained model again", key="ft_forget"):
    sess.finetuned = None
    st.rerun()
