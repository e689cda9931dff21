"""Rule-based labeling: labeling functions, the label model that combines their votes, and their analysis.

    from metalabel.rules import ABSTAIN, keywords, labeling_function

    space = keywords("sci.space", ["orbit", "nasa", "shuttle"])

    @labeling_function
    def mentions_jpeg(text: str) -> str | None:
        return "comp.graphics" if "jpeg" in text else ABSTAIN

Give such a file to ``metalabel run PROJECT --rules rules.py`` (or a TOML file, see
``metalabel.rules.files``), or ``Project.run(..., rules=...)``.
"""

from metalabel.rules.analysis import RuleAnalysis, RuleStats, analyze_rules, wilson_interval
from metalabel.rules.files import load_rules
from metalabel.rules.functions import (
    ABSTAIN,
    ABSTAIN_INDEX,
    LabelingFunction,
    RuleSet,
    RuleVotes,
    column,
    filename_contains,
    keywords,
    labeling_function,
    model_prediction,
    regex,
)
from metalabel.rules.label_model import LabelModel
from metalabel.rules.provenance import keep_rules_file, label_rule_votes, record_rule_votes, saved_rules

__all__ = [
    "ABSTAIN", "ABSTAIN_INDEX", "LabelModel", "LabelingFunction", "RuleAnalysis", "RuleSet", "RuleStats", "RuleVotes",
    "analyze_rules", "column", "filename_contains", "keep_rules_file", "keywords", "label_rule_votes",
    "labeling_function", "load_rules", "model_prediction", "record_rule_votes", "regex", "saved_rules",
    "wilson_interval",
]
