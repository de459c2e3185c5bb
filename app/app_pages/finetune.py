"""Fine-tune: adapt the pretrained model to this city on a small share of its data."""

import streamlit as st

import views
from state import inputs, outputs
from state.session import session
from trajmoe.errors import TrajMoEError

st.title("Fine-tune the model on this city")
st.markdown(
    "The pretrained model already knows how people move in other cities. Fine-tuning shows it a "
    "small share of this city's trajectories so that it learns the local patterns, in seconds."
)
prep, data = inputs.require_city()
city = prep.meta["city"]
sess = session()

choices = ["The shipped pretrained model", "A checkpoint I upload"]
start = st.radio("Start from", choices, index=int(sess.base_checkpoint is not None), horizontal=True, key="ckpt_choice")
if start == choices[1]:
    files = st.file_uploader(
        f"The checkpoint's two files, NAME.safetensors and NAME.json (up to {inputs.max_upload_mb()} MB each)",
        type=["safetensors", "json"], accept_multiple_files=True, key="ckpt_upload")
    if files:
        try:
            inputs.start_from_upload(files)
            st.success(f"Starting from the uploaded checkpoint ({files[0].name}).")
        except TrajMoEError as exc:
            st.error(f"This checkpoint cannot be used: {exc}")
            st.stop()
else:
    sess.start_from(None)

try:
    base = inputs.base_model()
except TrajMoEError as exc:
    st.error(f"The starting checkpoint cannot be loaded: {exc}")
    st.stop()
if base is None:
    st.warning("The shipped checkpoint `assets/trajmoe_pretrained.safetensors` (and its .json) is not in "
               "this copy of the app. Upload a checkpoint above to fine-tune.")
    st.stop()
_, base_meta, base_path = base
trained_on = ", ".join(dict.fromkeys(base_meta.get("cities", []))) or "other cities"  # once each
st.caption(f"Starting checkpoint: `{base_path.name}`, pretrained on {trained_on}.")

c1, c2 = st.columns(2)
share = c1.slider("Share of the city's data to learn from (%)", 1, 100, round(100 * outputs.FRACTION), key="ft_share",
                  help="The paper's setting is 5%: one pass over 5% of the training trajectories.")
epochs = c2.number_input("Passes over it (epochs)", min_value=1, max_value=10, value=1, key="ft_epochs")
with st.expander("Advanced"):
    max_steps = st.number_input("Stop after this many training steps (0 = no limit)", 0, 100_000, 0, key="ft_max_steps")
    light = st.toggle("Train only the city's own expert, the routers and the output (faster, lighter)", key="ft_light")

if st.button(f"Fine-tune on {share}% of {city}", type="primary", key="ft_run"):
    try:
        sess.finetuned = outputs.finetune(
            prep, data, fraction=share / 100, epochs=int(epochs), max_steps=int(max_steps) or None,
            mode="light" if light else "full")
    except TrajMoEError as exc:
        st.error(f"Fine-tuning could not run: {exc}")
        st.stop()

ft = outputs.finetuned_for(prep.folder)
if ft is None:
    st.info("Not fine-tuned yet: the Flows, Experts and Scenario pages show the pretrained model's "
            "zero-shot predictions until you do.")
    st.stop()

st.success(f"Done: {ft.steps} training steps in {ft.seconds:.1f} s. The Flows, Experts and "
           f"Scenario pages now show **{ft.label}**.")
table = outputs.metrics_table(ft.metrics)
st.markdown(f"#### How often each model guesses the next place right, on {ft.metrics['fine-tuned']['n']:,} "
            "held-out visits")
st.dataframe(table, hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="percent") for c in table.columns[1:4]} | {
    "Mean reciprocal rank": st.column_config.NumberColumn(format="%.3f")})
views.plotly(views.metrics_chart(table), key="ft_metrics")
st.caption(f"The baselines learn from the same share of data. Held-out visits are the last 20% of each "
           f"person's visits, never seen in training; each is predicted from the person's "
           f"{outputs.CONTEXT_VISITS} visits before it, as in the benchmarks.")

d1, d2, d3 = st.columns(3)
stem = f"trajmoe_{city.lower().replace(' ', '_')}"
d1.download_button("Download the fine-tuned weights (.safetensors)", ft.files["safetensors"],
                   file_name=f"{stem}.safetensors", mime="application/octet-stream", key="dl_weights")
d2.download_button("Download its description (.json)", ft.files["json"], file_name=f"{stem}.json",
                   mime="application/json", key="dl_sidecar")
if d3.button("Show the pretrained model again", key="ft_forget"):
    sess.finetuned = None
    st.rerun()
