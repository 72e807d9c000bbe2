"""The paper's numbers, as plain data: the REFERENCE this project compares against, never our results.

Source: Sanh, Debut, Chaumond, Wolf (2019), "DistilBERT, a distilled version of BERT: smaller, faster, cheaper
and lighter", arXiv:1910.01108 v4, Tables 1-4 and section 3-4 text. Two later variants of Table 1 published by
the authors are kept beside it (README_GLUE, MODEL_CARD_GLUE) so that the book can say which one it compares
against: the paper's v4 table, unless a page says otherwise.

All scores are in percent points (0-100), as printed; times in seconds; parameter counts in millions.
"""

from lib import glue, tasks  # import-light both: this module stays import-light
from lib.glue import COLA, MNLI, MRPC, QNLI, QQP, RTE, SST2, STSB, WNLI

PAPER = "Sanh et al. (2019), arXiv:1910.01108 v4"
PAPER_URL = "https://arxiv.org/abs/1910.01108"

# Model labels. The paper's models, as keys of TABLE1-3 and as labels of stage 5's ``models``
# (params/*/05_latency.yaml) when the published architectures are timed; and the roles of this project's own
# models in every stage's ``models`` and results (the paper's method names them teacher and student). The book
# matches results to the paper's rows by these labels: tests/test_paper.py checks the YAML files against them.
ELMO, BERT_BASE, DISTILBERT = "ELMo", "BERT-base", "DistilBERT"
TEACHER, STUDENT = "teacher", "student"
MODEL_LABELS = (BERT_BASE, DISTILBERT, TEACHER, STUDENT)  # the labels stage 5 and the book know

# Table 1 column order: the registry's GLUE tasks (lib.glue), alphabetical as the paper prints them, with the metric
# behind each column. MRPC and QQP: mean of accuracy and F1; STS-B: mean of Pearson and Spearman (the
# GLUE-benchmark convention, see lib/metrics.py); MNLI: the matched dev set. A GLUE task the paper does not print
# is a column without a paper number (TABLE1 rows are keyed by task name: read them with .get).
GLUE_TASKS = glue.PAPER_ORDER
TASK_NAMES = {name: task.label for name, task in tasks.TASKS.items()}
TASK_METRICS = {name: glue.TASKS[name].paper_metric for name in GLUE_TASKS}

# Table 1: GLUE dev set. BERT-base and DistilBERT are medians of 5 fine-tuning runs; "score" is the macro average
# as printed (the BERT-base row's nine columns average to 79.7, not 79.5: see README_GLUE).
TABLE1 = {
    ELMO: {"score": 68.7, COLA: 44.1, MNLI: 68.6, MRPC: 76.6, QNLI: 71.1, QQP: 86.2, RTE: 53.4, SST2: 91.5,
           STSB: 70.4, WNLI: 56.3},
    BERT_BASE: {"score": 79.5, COLA: 56.3, MNLI: 86.7, MRPC: 88.6, QNLI: 91.8, QQP: 89.6, RTE: 69.3, SST2: 92.7,
                STSB: 89.0, WNLI: 53.5},
    DISTILBERT: {"score": 77.0, COLA: 51.3, MNLI: 82.2, MRPC: 87.5, QNLI: 89.2, QQP: 88.5, RTE: 59.9, SST2: 91.3,
                 STSB: 86.9, WNLI: 56.3},
}
TABLE1_NOTE = "GLUE dev set; BERT-base and DistilBERT: median of 5 runs; score = macro average of the 9 tasks"

# Table 2: IMDb test accuracy; SQuAD 1.1 dev exact match / F1. "DistilBERT (D)": a second distillation step
# during fine-tuning, from a BERT teacher already fine-tuned on SQuAD (no IMDb figure for it).
TABLE2 = {
    BERT_BASE: {"imdb_accuracy": 93.46, "squad_exact_match": 81.2, "squad_f1": 88.5},
    DISTILBERT: {"imdb_accuracy": 92.82, "squad_exact_match": 77.7, "squad_f1": 85.8},
    DISTILBERT + " (D)": {"imdb_accuracy": None, "squad_exact_match": 79.1, "squad_f1": 86.9},
}
TABLE2_METRICS = {"imdb_accuracy": "IMDb acc. (test)", "squad_exact_match": "SQuAD 1.1 EM (dev)",
                  "squad_f1": "SQuAD 1.1 F1 (dev)"}

# Table 3: a full pass over the STS-B dev set on CPU with batch size 1 (seconds), and parameter counts (millions).
# The counts are of the encoders without the MLM head (BertModel with its pooler, DistilBertModel): what stage 5
# loads and lib.models.count_parameters counts.
TABLE3 = {
    ELMO: {"params_m": 180, "seconds": 895},
    BERT_BASE: {"params_m": 110, "seconds": 668},
    DISTILBERT: {"params_m": 66, "seconds": 410},
}
TABLE3_NOTE = "full pass over STS-B dev on CPU, batch size 1"
# Section 4 (on-device): iPhone 7 Plus, tokenization excluded.
ON_DEVICE = {"device": "iPhone 7 Plus", "faster_than_bert_percent": 71, "model_size_mb": 207}

# Table 4: change in GLUE macro score against the full triple loss (points).
TABLE4 = {
    "without L_ce (distillation)": -2.96,
    "without L_cos (cosine)": -1.46,
    "without L_mlm (masked LM)": -0.31,
    "random student initialisation": -3.69,
}

# The headline claim (abstract): what is retained, removed, gained.
CLAIM = {"glue_retained_percent": 97, "smaller_percent": 40, "faster_percent": 60}

# Training compute (section 3).
COMPUTE = {"gpus": 8, "gpu": "16 GB V100", "hours": 90,
           "data": "English Wikipedia + Toronto Book Corpus",
           # the same corpus's size as BERT's paper gives it (the DistilBERT paper prints no count; it trains "on
           # the same corpus as the original BERT model"): words, not WordPiece tokens
           "corpus_words": 3.3e9,
           "corpus_words_parts": {"BooksCorpus": 800e6, "English Wikipedia": 2500e6},
           "corpus_words_source": "Devlin et al. (2019), BERT, arXiv:1810.04805, section 3.1",
           "corpus_words_url": "https://arxiv.org/abs/1810.04805"}

# --- variants of Table 1 published by the authors elsewhere (errata) ---

# The authors' distillation README (huggingface/transformers, examples/research_projects/distillation/README.md):
# same as Table 1 except MNLI, BERT-base 84.7 (paper 86.7) and DistilBERT 82.1 (paper 82.2).
# a permalink: the folder was removed from the main branch (its last versions live at commits like this one)
README_URL = ("https://github.com/huggingface/transformers/blob/c8dfc84ee87d238ad88090d677fe5f1bae4739cf/"
              "examples/research_projects/distillation/README.md")
README_GLUE = {
    BERT_BASE: {**TABLE1[BERT_BASE], MNLI: 84.7},
    DISTILBERT: {**TABLE1[DISTILBERT], MNLI: 82.1},
}

# The distilbert-base-uncased model card as kept in huggingface/transformers (model_cards/, before cards moved to
# the hub): eight tasks, no WNLI, STS-B 85.8 (paper 86.9), labelled "Glue test results", with an "Average" of
# 77.0 (the paper's nine-task dev macro score; the eight numbers shown average to 79.5).
MODEL_CARD_URL = ("https://github.com/huggingface/transformers/blob/19220704f7aba85987a7bca342b81a3c7419d428/"
                  "model_cards/distilbert-base-uncased-README.md")
MODEL_CARD_GLUE = {
    DISTILBERT: {MNLI: 82.2, QQP: 88.5, QNLI: 89.2, SST2: 91.3, COLA: 51.3, STSB: 85.8, MRPC: 87.5, RTE: 59.9,
                 "average": 77.0},
}

# huggingface/transformers#2447 (Jan 2020): an earlier arXiv version printed MRPC 90.2 for DistilBERT; a
# re-evaluation of the released checkpoint gave F1 89.6 / accuracy 85.5 (mean 87.55), and v4 prints 87.5.
MRPC_ISSUE_URL = "https://github.com/huggingface/transformers/issues/2447"
MRPC_ISSUE = {"earlier_version_mrpc": 90.2, "reevaluated_f1": 89.6, "reevaluated_accuracy": 85.5}
