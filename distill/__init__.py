"""Knowledge distillation for MobileMamba: teachers (build, adapt inputs, run fast) and KD losses."""
from .config import DistillConfigError
from .losses import KDLoss, build_kd_loss, split_student_output
from .teachers import Teacher, TeacherError, build_teacher, teacher_num_classes

__all__ = ["build_teacher", "build_kd_loss", "Teacher", "KDLoss", "TeacherError", "DistillConfigError",
           "split_student_output", "teacher_num_classes"]
